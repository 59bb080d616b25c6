"""Backbones the LLM stages cannot load as they are: GGUF files, and randomly initialised controls.

Every LLM stage loads a Hugging Face checkpoint directory through `from_pretrained` (truncated to its
first l layers, optionally in 4/8-bit). A GGUF file (the llama.cpp format) is converted once into such
a directory: transformers reads GGUF through the `gguf` package, dequantizing to float, but refuses to
`save_pretrained` a model loaded that way, so the model is rebuilt from its config without the GGUF
quantization entry and given the loaded weights. The same rebuild with the weights left at their seeded
random initialisation gives `backbone.init: random`, the control that asks whether pretraining matters.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from slmrec.models.presets import BackboneError, is_gguf

logger = logging.getLogger(__name__)


def _require_gguf(path: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise BackboneError(
            f"{path} is a GGUF file, and reading GGUF needs the `gguf` package: pip install 'slmrec[gguf]'"
        )


def _load_source(source: Path, pretrained: bool) -> tuple[Any, Any, Any]:
    """(config, tokenizer, state dict or None) of a GGUF file or a Hugging Face checkpoint directory."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if is_gguf(source):
        _require_gguf(source)
        options = {"gguf_file": source.name}
        tokenizer = AutoTokenizer.from_pretrained(source.parent, **options)
        if not pretrained:
            return AutoConfig.from_pretrained(source.parent, **options), tokenizer, None
        model = AutoModelForCausalLM.from_pretrained(source.parent, **options)
        return model.config, tokenizer, model.state_dict()
    if not (source / "config.json").is_file():
        raise BackboneError(f"backbone.path {source} is neither a .gguf file nor a checkpoint with a config.json")
    tokenizer = AutoTokenizer.from_pretrained(source)
    if not pretrained:
        return AutoConfig.from_pretrained(source), tokenizer, None
    return AutoConfig.from_pretrained(source), tokenizer, AutoModelForCausalLM.from_pretrained(source).state_dict()


def convert(source: str | Path, directory: str | Path, init: str, seed: int) -> None:
    """Write `source` (GGUF file or checkpoint directory) as a float checkpoint directory with its tokenizer.

    `init: pretrained` keeps the source's weights; `init: random` keeps only its architecture, with weights
    drawn from the model's own initialisation under `seed`.
    """
    import torch
    from transformers import AutoModelForCausalLM

    source = Path(source)
    config, tokenizer, state = _load_source(source, pretrained=init == "pretrained")
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF entry: the rebuilt model holds plain float weights
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if state is not None:
        model.load_state_dict(state)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    logger.info(
        "%s -> %s: %d layers, hidden %d, %s weights",
        source,
        directory,
        config.num_hidden_layers,
        config.hidden_size,
        "pretrained" if state is not None else f"random (seed {seed})",
    )
