"""Rule `student`: SLMRec distillation into a small LLM recommender (data-parallel when gpu > 1)."""

from slmrec.workflow import run_stage

run_stage(snakemake, "student")
