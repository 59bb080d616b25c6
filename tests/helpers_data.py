"""Small on-disk datasets for stage tests: the real synthesize -> preprocess -> negatives chain, in a tmp dir."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from slmrec.data.negatives import draw_negatives
from slmrec.data.preprocess import preprocess, read_amazon2018
from slmrec.data.synthetic import write_synthetic_reviews
from slmrec.io import write_json

SASREC_OUTPUTS = ("model", "item_embeddings", "metrics", "train_log", "manifest")


def make_dataset(
    directory: Path, users: int, items: int, num_negatives: int, seed: int = 7, **sequence_options: Any
) -> SimpleNamespace:
    """Write raw reviews, splits.parquet, stats.json and negatives.parquet under `directory`.

    Returns their paths (as str, like Snakemake passes them) plus the number of items.
    """
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / "raw.json.gz"
    write_synthetic_reviews(raw, users=users, items=items, seed=seed, **sequence_options)
    result = preprocess(read_amazon2018(raw))
    paths = SimpleNamespace(
        dir=directory,
        splits=str(directory / "splits.parquet"),
        stats=str(directory / "stats.json"),
        negatives=str(directory / "negatives.parquet"),
        num_items=result.stats["items"],
        num_users=result.stats["users"],
    )
    result.splits.write_parquet(paths.splits)
    write_json(paths.stats, result.stats)
    draw_negatives(result.splits, result.stats["items"], num_negatives, seed=2025).write_parquet(paths.negatives)
    return paths


def sasrec_outputs(directory: Path) -> SimpleNamespace:
    """The `output` object `slmrec.stages.sasrec.run` expects, with every file under `directory`."""
    names = {
        "model": "model.safetensors",
        "item_embeddings": "item_embeddings.safetensors",
        "metrics": "metrics.json",
        "train_log": "train_log.csv",
        "manifest": "manifest.json",
    }
    return SimpleNamespace(**{key: str(directory / name) for key, name in names.items()})


def sasrec_config(**overrides: Any) -> dict[str, Any]:
    """A small, fast SASRec configuration (the keys the `sasrec` rule passes through `params:`)."""
    cfg: dict[str, Any] = {
        "hidden": 32,
        "layers": 1,
        "heads": 1,
        "dropout": 0.2,
        "lr": 0.005,
        "weight_decay": 0.0,
        "batch_size": 64,
        "epochs": 2,
        "patience": 3,
        "seed": 42,
    }
    cfg.update(overrides)
    return cfg


# --- the LLM stages (teacher, student) ---------------------------------------------------------

LLM_OUTPUTS = {
    "model": "trainable.safetensors",
    "config": "config.json",
    "metrics": "metrics.json",
    "train_log": "train_log.csv",
    "manifest": "manifest.json",
}


def make_backbone(directory: Path, seed: int = 0) -> str:
    """The `tiny` preset (random LLaMA, 8 layers, hidden 64) and its tokenizer, as the `backbone` rule writes it."""
    from slmrec.models.llmrec import DEFAULT_PROMPT_PREFIX, DEFAULT_PROMPT_SUFFIX
    from slmrec.models.presets import build_preset

    build_preset("tiny", directory, [DEFAULT_PROMPT_PREFIX, DEFAULT_PROMPT_SUFFIX], seed=seed)
    return str(directory)


def write_item_table(path: Path, num_items: int, dim: int = 16, seed: int = 0) -> str:
    """A random stand-in for SASRec's exported `item_embeddings.safetensors` ([items + 1, dim])."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    save_file({"item_embeddings": torch.randn(num_items + 1, dim, generator=generator)}, str(path))
    return str(path)


def llm_outputs(directory: Path) -> SimpleNamespace:
    """The `output` object the teacher and student stages expect, with every file under `directory`."""
    return SimpleNamespace(**{key: str(directory / name) for key, name in LLM_OUTPUTS.items()})


def llm_config(**overrides: Any) -> dict[str, Any]:
    """A tiny, fast `teacher` section (every key the schema fills in), for 2-layer models."""
    cfg: dict[str, Any] = {
        "layers": 2,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "targets_per_user": 1,
        "batch_size": 16,
        "learning_rate": 0.01,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0,
        "max_steps": 4,
        "epochs": 1,
        "eval_steps": 2,
        "logging_steps": 1,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "adam_epsilon": 1e-8,
        "gradient_checkpointing": False,
        "seed": 42,
    }
    cfg.update(overrides)
    return cfg


def backbone_settings(**overrides: Any) -> dict[str, Any]:
    return {"path": None, "preset": "tiny", "dtype": "float32", "quantization": "none", "seed": 0, **overrides}


def prompt_settings() -> dict[str, str]:
    from slmrec.models.llmrec import DEFAULT_PROMPT_PREFIX, DEFAULT_PROMPT_SUFFIX

    return {"prefix": DEFAULT_PROMPT_PREFIX, "suffix": DEFAULT_PROMPT_SUFFIX}


def distill_settings(**overrides: Any) -> dict[str, Any]:
    """A `distill` section for 2-block distillation (e.g. a 4-layer teacher into a 2-layer student)."""
    return {
        "mode": "offline",
        "blocks": 2,
        "cos_weight": 1.0,
        "l2_weight": 0.1,
        "multi_supervision_weight": 0.1,
        "teacher_quantization": "none",
        **overrides,
    }
