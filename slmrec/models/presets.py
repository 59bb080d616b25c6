"""Named backbones built locally, for machines that cannot download a pretrained checkpoint.

A preset is written with `save_pretrained` like any Hugging Face checkpoint, so the pipeline loads it
through the same `from_pretrained` path as a real LLaMA. Its weights are random: it shows that the
pipeline runs, not what LLM pretraining is worth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 192,  # a multiple of 64: bitsandbytes repacks 4-bit weights in blocks
        "num_hidden_layers": 8,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
    },
}


def build_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the prompt text that, like LLaMA's, prepends `<s>`."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS))
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def build_preset(name: str, directory: str | Path, corpus: list[str], seed: int = 0) -> Path:
    """Write a randomly initialised checkpoint and its tokenizer to `directory`."""
    if name not in PRESETS:
        raise ValueError(f"unknown backbone.preset {name!r}; known presets: {', '.join(PRESETS)}")
    directory = Path(directory)
    tokenizer = build_tokenizer(corpus)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **PRESETS[name],
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
