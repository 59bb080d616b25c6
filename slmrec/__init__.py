"""slmrec: a reproducible SLMRec pipeline (distilling LLM sequential recommenders into small ones)."""

__version__ = "0.1.0"
