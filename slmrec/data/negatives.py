"""Evaluation negatives, drawn once and stored, so that every model is ranked against the same candidates."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from slmrec.data.preprocess import DataError
from slmrec.io import read_json, utc_now, write_manifest, write_parquet

SPLIT_STREAMS = {"valid": 0, "test": 1}


def draw_negatives(
    splits: pl.DataFrame,
    num_items: int,
    num_negatives: int = 999,
    seed: int = 2025,
    users: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """K items per user and split, uniform without replacement among items the user never interacted with.

    Valid and test come from independent random streams of the same seed, so changing one never
    changes the other, and a rerun gives the same draw on any machine (numpy's PCG64).
    """
    if num_items < 1:
        raise DataError(f"cannot draw negatives from an item table of {num_items} items")
    user_ids = dict(users.iter_rows()) if users is not None else {}
    histories = [
        set(train) | {valid, test} for train, valid, test in splits.select("train", "valid", "test").iter_rows()
    ]
    draws: dict[str, list[np.ndarray]] = {}
    for split, stream in SPLIT_STREAMS.items():
        rng = np.random.default_rng([seed, stream])
        rows = []
        for user, history in tqdm(
            zip(splits["user"], histories, strict=True),
            total=len(histories),
            desc=f"negatives ({split})",
            mininterval=2,
        ):
            eligible = num_items - len(history)
            if eligible < num_negatives:
                name = f" ({user_ids[user]})" if user in user_ids else ""
                raise DataError(
                    f"user {user}{name} has only {eligible} items they never interacted with, fewer than "
                    f"negatives.num_negatives = {num_negatives}; set a smaller num_negatives (at most {eligible})"
                )
            # A random ordered subset of all items, minus the history, is a random ordered subset of
            # the eligible items: its first K are a uniform draw without replacement.
            size = min(num_items, num_negatives + len(history))
            candidates = rng.choice(num_items, size=size, replace=False) + 1
            keep = candidates[~np.isin(candidates, list(history))][:num_negatives]
            rows.append(keep.astype(np.int32))
        draws[split] = rows
    # Stored as List (not fixed-size Array) columns: the contract readers rely on.
    return pl.DataFrame(
        {
            "user": splits["user"],
            **{split: pl.Series(np.stack(rows)).cast(pl.List(pl.Int32)) for split, rows in draws.items()},
        }
    )


def run(splits_path: str, stats_path: str, users_path: str, cfg: dict[str, Any], output: Any) -> pl.DataFrame:
    """The `negatives` rule: draw from the preprocessed splits and write the artifact atomically."""
    started = utc_now()
    splits = pl.read_parquet(splits_path)
    num_items = read_json(stats_path)["items"]
    negatives = draw_negatives(splits, num_items, cfg["num_negatives"], cfg["seed"], users=pl.read_parquet(users_path))
    write_parquet(output.negatives, negatives)
    write_manifest(
        output.manifest,
        stage="negatives",
        config={"negatives": cfg},
        inputs=[splits_path, stats_path, users_path],
        outputs=[output.negatives],
        started=started,
    )
    return negatives
