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
