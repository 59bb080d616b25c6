"""The popularity baseline: every user gets the same ranking, by training-set count.

It runs through the shared evaluation routine as a one-dimensional "model" (a constant user vector
and an item table holding counts), so it is scored exactly like every other model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch

from slmrec.evaluate import evaluate_splits, load_eval_splits
from slmrec.io import read_json, utc_now, write_json, write_manifest


def popularity_table(splits: pl.DataFrame, num_items: int) -> torch.Tensor:
    """Training-set interaction counts as an [items + 1, 1] table (row 0, padding, counts 0)."""
    counts = np.bincount(splits["train"].explode().drop_nulls().to_numpy(), minlength=num_items + 1)
    return torch.as_tensor(counts[: num_items + 1], dtype=torch.float32).unsqueeze(1)


def run(splits_path: str, negatives_path: str, stats_path: str, cfg: dict[str, Any], output: Any) -> dict[str, Any]:
    started = utc_now()
    num_items = read_json(stats_path)["items"]
    table = popularity_table(pl.read_parquet(splits_path), num_items)
    eval_splits = load_eval_splits(splits_path, negatives_path, num_items)
    scores = evaluate_splits(
        lambda batch: torch.ones(len(batch), 1), table, eval_splits, max_len=1, full_ranking=cfg["full_ranking"]
    )
    metrics = {
        "model": "Popularity",
        **scores,
        "params": {"total": 0, "trainable": 0, "inference": 0},
        "train_seconds": 0.0,
        "inference_seconds": scores["test"]["seconds"],
    }
    write_json(output.metrics, metrics)
    write_manifest(
        output.manifest,
        stage="popularity",
        config={"evaluate": cfg},
        inputs=[splits_path, negatives_path, stats_path],
        outputs=[output.metrics],
        started=started,
    )
    return metrics
