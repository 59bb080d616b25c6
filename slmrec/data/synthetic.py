"""A deterministic synthetic review file in the Amazon 2018 JSON-lines format.

The demo runs the same parser as real data, so the file mimics `{Category}_5.json.gz`: one review
per line, extra fields included, lines not grouped by user. It plants structure that a sequence
model can learn and a popularity ranking cannot: each item has a few likely successors, and a
user's next item follows the current one with probability `transition_prob`, else it is drawn
from a Zipf popularity law.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

import numpy as np

from slmrec.io import atomic_path

DAY = 86_400
START_TIME = 1_400_000_000


def _ids(rng: np.random.Generator, prefix: str, count: int) -> list[str]:
    """Opaque, unique string ids, so that id numbering cannot lean on the generator's order."""
    codes = rng.choice(16**9, size=count, replace=False)
    return [f"{prefix}{code:09X}" for code in codes]


def user_sequences(
    users: int,
    items: int,
    seed: int,
    min_length: int,
    max_length: int,
    successors: int,
    transition_prob: float,
    popularity_exponent: float,
) -> list[list[int]]:
    """Each user's items in time order (0-based item indices, no repeats within a user)."""
    if min_length > max_length:
        raise ValueError(f"synthetic source: min_length {min_length} exceeds max_length {max_length}")
    if max_length >= items:
        raise ValueError(f"synthetic source: max_length {max_length} must be below items {items}")
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** popularity_exponent
    popularity = rng.permutation(popularity / popularity.sum())
    next_items = rng.integers(0, items, size=(items, successors))
    sequences = []
    for _ in range(users):
        length = int(rng.integers(min_length, max_length + 1))
        current = int(rng.choice(items, p=popularity))
        seen, seq = {current}, [current]
        while len(seq) < length:
            if rng.random() < transition_prob:
                candidate = int(next_items[current, rng.integers(successors)])
            else:
                candidate = int(rng.choice(items, p=popularity))
            if candidate in seen:
                continue
            seen.add(candidate)
            seq.append(candidate)
            current = candidate
        sequences.append(seq)
    return sequences


def write_synthetic_reviews(
    path: str | os.PathLike,
    users: int,
    items: int,
    seed: int,
    low_rating_prob: float,
    **sequence_options: Any,
) -> int:
    """Write the gzipped JSON-lines file atomically; return the number of reviews.

    `sequence_options` are the remaining settings of a synthetic source (see `user_sequences`).
    """
    sequences = user_sequences(users, items, seed, **sequence_options)
    rng = np.random.default_rng([seed, 1])
    user_ids, item_ids = _ids(rng, "A", users), _ids(rng, "B", items)
    records: list[dict[str, Any]] = []
    for user, seq in enumerate(sequences):
        time = START_TIME + int(rng.integers(0, 365)) * DAY
        for item in seq:
            time += int(rng.integers(1, 30)) * DAY
            low = rng.random() < low_rating_prob
            rating = float(rng.integers(1, 4) if low else rng.integers(4, 6))
            records.append(
                {
                    "overall": rating,
                    "verified": True,
                    "reviewTime": "",
                    "reviewerID": user_ids[user],
                    "asin": item_ids[item],
                    "reviewText": f"synthetic review {len(records)}",
                    "unixReviewTime": time,
                }
            )
    order = rng.permutation(len(records))
    with atomic_path(path) as tmp, gzip.open(tmp, "wt", compresslevel=6) as handle:
        for index in order:
            handle.write(json.dumps(records[index]) + "\n")
    return len(records)
