"""The one evaluation protocol every model goes through, so that comparisons cannot drift.

Validation feeds `train` and asks for `valid`; test feeds `train + [valid]` and asks for `test`. The
candidates are the target plus the negatives stored by the `negatives` rule. A model enters only as
an `encode` function (histories -> user vectors) and an item table; the score of an item is the dot
product of the two.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor

from slmrec.batching import length_batches, pad_left
from slmrec.data.samples import EvalSplit
from slmrec.errors import ArtifactError
from slmrec.io import read_artifact, write_parquet
from slmrec.metrics import full_ranks, metrics_from_ranks, sampled_ranks
from slmrec.models.recommender import Recommender

Encoder = Callable[[Tensor], Tensor]
# A model's per-user ranks (its `ranks.parquet`): the user's split, id and held-out item, and the item's 0-based
# rank among the stored candidates and, where the evaluation ranks over all items, among all items.
RANK_SCHEMA = {"split": pl.String, "user": pl.Int64, "item": pl.Int64, "rank": pl.Int64, "full_rank": pl.Int64}


@dataclass
class UserRanks:
    """Each user's 0-based rank of the held-out item, in the split's user order: among the stored candidates
    (`sampled`, [N]) and, optionally, over all items with the history masked (`full`, [N]); `seconds` is the
    wall time it took to score every user, i.e. inference time."""

    sampled: Tensor
    full: Tensor | None
    seconds: float


@torch.no_grad()
def user_ranks(
    encode: Encoder,
    item_table: Tensor,
    split: EvalSplit,
    max_len: int,
    batch_size: int = 256,
    *,
    full_ranking: bool,
    device: torch.device | str = "cpu",
    bucket: bool = True,
) -> UserRanks:
    """Score every user of `split` on the stored candidates (and, optionally, over all items).

    Users are batched by history length (`bucket`); each rank is put back at its user's row, so two models'
    ranks pair user by user.
    """
    start = time.perf_counter()
    sampled = torch.empty(len(split), dtype=torch.int64)
    full = torch.empty(len(split), dtype=torch.int64) if full_ranking else None
    batches = history_batches(split.histories, max_len, batch_size, bucket)
    for rows, histories, users in encoded_batches(encode, split.histories, batches, max_len, device):
        table = item_table.to(users.device, torch.float32)
        targets = torch.tensor(split.targets[rows], device=users.device)
        negatives = torch.tensor(split.negatives[rows], device=users.device)
        pos = (users * table[targets]).sum(-1)
        neg = torch.einsum("bd,bkd->bk", users, table[negatives])
        index = torch.from_numpy(rows)
        sampled[index] = sampled_ranks(pos, neg).cpu()
        if full is not None:
            scores = users @ table.T
            full[index] = full_ranks(scores, targets, seen_mask(histories, scores.shape[1], scores.device)).cpu()
    return UserRanks(sampled, full, time.perf_counter() - start)


def history_batches(histories: list[list[int]], max_len: int, batch_size: int, bucket: bool = True) -> list[np.ndarray]:
    """Row indices of `histories` in batches; with `bucket`, by the length a model reads (at most `max_len`)."""
    lengths = np.array([min(len(history), max_len) for history in histories])
    return length_batches(lengths, batch_size, bucket)


def encoded_batches(
    encode: Encoder, histories: list[list[int]], batches: list[np.ndarray], max_len: int, device: torch.device | str
) -> Iterator[tuple[np.ndarray, list[list[int]], Tensor]]:
    """Each batch's rows, their histories and the user vectors ([B, d], float32) of the histories' newest `max_len`
    items, left-padded."""
    for rows in batches:
        chosen = [histories[row] for row in rows]
        yield rows, chosen, encode(pad_left(chosen, max_len).to(device)).float()


def seen_mask(histories: list[list[int]], columns: int, device: torch.device | str = "cpu") -> Tensor:
    """[B, columns] bool: True at each row's history items (the items a full ranking leaves out)."""
    seen = torch.zeros(len(histories), columns, dtype=torch.bool, device=device)
    for row, history in enumerate(histories):
        seen[row, history] = True
    return seen


def ranks_frame(split: EvalSplit, ranks: UserRanks) -> pl.DataFrame:
    """One split's rows of a ranks table (`RANK_SCHEMA`): each user, its held-out item and its ranks."""
    full = ranks.full.numpy() if ranks.full is not None else None
    return pl.DataFrame(
        {
            "split": [split.name] * len(split),
            "user": split.users,
            "item": split.targets,
            "rank": ranks.sampled.numpy(),
            "full_rank": full,
        },
        schema=RANK_SCHEMA,
    )


def split_metrics(ranks: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Each split's metrics in percent from a ranks table: the means over its users of the per-user metrics,
    with `full_*` where every user was also ranked over all items."""
    result = {}
    for (split,), rows in ranks.group_by("split", maintain_order=True):
        metrics = metrics_from_ranks(rows["rank"].to_numpy(writable=True))
        if rows["full_rank"].null_count() == 0:
            metrics.update(
                {f"full_{k}": v for k, v in metrics_from_ranks(rows["full_rank"].to_numpy(writable=True)).items()}
            )
        result[str(split)] = metrics
    return result


@dataclass
class Scores:
    """A model's ranks on every split, as its `ranks.parquet` holds them, and the seconds each split took to
    score. Its metrics are computed from the ranks, so the two files of a model cannot disagree."""

    ranks: pl.DataFrame
    seconds: dict[str, float]

    def metrics(self) -> dict[str, dict[str, float]]:
        """Each split's metrics in percent, and `seconds`: its inference time."""
        return {split: {**m, "seconds": self.seconds[split]} for split, m in split_metrics(self.ranks).items()}

    def write(self, path: str | Path) -> None:
        write_parquet(path, self.ranks)


def read_ranks(path: str | Path) -> pl.DataFrame:
    """A model's ranks table, checked to have `RANK_SCHEMA`'s columns."""
    frame = read_artifact(path, pl.read_parquet)
    if dict(frame.schema) != RANK_SCHEMA:
        raise ArtifactError(
            f"{path}: not a ranks table (columns {dict(frame.schema)}, expected {RANK_SCHEMA}); rerun the stage "
            "that wrote it"
        )
    return frame


def evaluate(
    encode: Encoder, item_table: Tensor, split: EvalSplit, max_len: int, batch_size: int = 256, **options: Any
) -> dict[str, float]:
    """Metrics in percent on the stored candidates (and, with `full_ranking`, over all items with history
    masked), the means of `user_ranks`' per-user metrics (`options` are its keywords), and `seconds`: the
    inference time of the split."""
    ranks = user_ranks(encode, item_table, split, max_len, batch_size, **options)
    return {**split_metrics(ranks_frame(split, ranks))[split.name], "seconds": ranks.seconds}


def score_recommender(
    recommender: Recommender, splits: dict[str, EvalSplit], max_len: int, batch_size: int, full_ranking: bool
) -> Scores:
    """Every split, for a model with `user_vectors` and an `item_table` (the `Recommender` interface)."""
    table = recommender.item_table
    frames, seconds = [], {}
    for name, split in splits.items():
        ranks = user_ranks(
            recommender.user_vectors,
            table,
            split,
            max_len,
            batch_size,
            full_ranking=full_ranking,
            device=table.device,
        )
        frames.append(ranks_frame(split, ranks))
        seconds[name] = ranks.seconds
    return Scores(pl.concat(frames), seconds)
