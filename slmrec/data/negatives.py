"""Evaluation negatives, drawn once and stored, so that every model is ranked against the same candidates."""

from __future__ import annotations

from typing import cast

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from slmrec.errors import DataError

SPLIT_STREAMS = {"valid": 0, "test": 1}


def draw_negatives(
    splits: pl.DataFrame,
    num_items: int,
    num_negatives: int,
    seed: int,
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
    _check_enough_items(splits["user"], histories, num_items, num_negatives, user_ids)
    draws: dict[str, list[np.ndarray]] = {}
    for split, stream in SPLIT_STREAMS.items():
        rng = np.random.default_rng([seed, stream])
        rows = []
        for history in tqdm(histories, desc=f"negatives ({split})", mininterval=2):
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


def fewest_eligible(splits: pl.DataFrame, num_items: int) -> int:
    """The fewest items any user never interacted with: the largest K that every user can be given."""
    if splits.height == 0:
        return num_items
    seen = splits.select(pl.concat_list("train", "valid", "test").list.n_unique()).to_series()
    return num_items - cast(int, seen.max())


def _check_enough_items(
    users: pl.Series, histories: list[set[int]], num_items: int, num_negatives: int, user_ids: dict[int, str]
) -> None:
    """Every user needs `num_negatives` items they never interacted with; name the largest count that works.

    The user with the fewest such items sets the limit, so the message names that user, not the
    first one short.
    """
    if not histories:
        return
    eligible = num_items - np.array([len(history) for history in histories])
    short = int((eligible < num_negatives).sum())
    if not short:
        return
    worst = int(np.argmin(eligible))
    fewest = int(eligible[worst])
    user = users[worst]
    name = f" ({user_ids[user]})" if user in user_ids else ""
    fix = (
        f"set a smaller num_negatives (at most {fewest}, the fewest never-interacted items of any user)"
        if fewest >= 1
        else "no num_negatives works, as this user has interacted with every item"
    )
    raise DataError(
        f"user {user}{name} has only {fewest} items they never interacted with, fewer than "
        f"negatives.num_negatives = {num_negatives} ({short} of {len(histories)} users have fewer than "
        f"{num_negatives}); {fix}"
    )
