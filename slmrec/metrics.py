"""Ranking metrics shared by every model (SASRec, LLM teacher, distilled student).

All models go through the same two steps: turn scores into a 0-based rank of the
positive item (``sampled_ranks`` for the stored 1 + 999 candidates, ``full_ranks``
over every item), then turn ranks into percent metrics (``metrics_from_ranks``).

Rank contract: the rank of the positive is the number of competing candidates whose
score is **greater than or equal to** the positive's score. Ties count against the
model, so a degenerate model that scores every candidate the same ranks last, not
first, and cannot look good by collapsing its outputs.

NaN scores raise ``ValueError``: a NaN compares false with everything, so it would
otherwise silently rank a NaN positive first, or drop a NaN competitor out of the
count, and report numbers better than the model deserves.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slmrec.errors import MetricsRowError
from slmrec.io import read_artifact, read_json, write_json
from slmrec.models.recommender import Recommender

SPLITS = ("valid", "test")  # the evaluation splits: validation, where choices are made, then test
METRIC_NAMES = ("HR@1", "HR@5", "NDCG@5", "HR@10", "NDCG@10", "MRR")  # every table's columns, in this order

ArrayLike = Tensor | np.ndarray


def _raise_on_nan_rows(bad_rows: Tensor, what: str) -> None:
    """Raise with the number of offending rows, so the caller sees how widespread it is."""
    n_bad = int(bad_rows.sum())
    if n_bad:
        raise ValueError(
            f"{what}: {n_bad} of {bad_rows.numel()} rows contain NaN scores; "
            "NaN would silently rank as better than it is, fix the model output"
        )


def sampled_ranks(pos_scores: ArrayLike, neg_scores: ArrayLike) -> Tensor:
    """0-based rank of each positive among its own sampled negatives.

    ``pos_scores`` is [N], ``neg_scores`` is [N, K]; returns int64 [N] with values
    in 0..K, where rank = #negatives scoring >= the positive (ties count against).
    """
    pos = torch.as_tensor(pos_scores)
    neg = torch.as_tensor(neg_scores, device=pos.device)
    if pos.dim() != 1:
        raise ValueError(f"pos_scores must be 1-D [N], got shape {tuple(pos.shape)}")
    if neg.dim() != 2:
        raise ValueError(f"neg_scores must be 2-D [N, K], got shape {tuple(neg.shape)}")
    if neg.shape[0] != pos.shape[0]:
        raise ValueError(f"pos_scores [N={pos.shape[0]}] and neg_scores [N={neg.shape[0]}, K] disagree on N")
    if pos.shape[0] == 0:
        raise ValueError("empty input: no rows to rank")
    if neg.shape[1] == 0:
        raise ValueError("neg_scores has K=0 negatives; a rank among no candidates is meaningless")
    _raise_on_nan_rows(pos.isnan() | neg.isnan().any(dim=1), "sampled_ranks")
    return (neg >= pos.unsqueeze(1)).sum(dim=1, dtype=torch.int64)


def full_ranks(scores: ArrayLike, targets: ArrayLike, exclude: ArrayLike | None = None) -> Tensor:
    """0-based rank of each target among all real items (full ranking).

    ``scores`` is [N, I+1] over item ids 0..I; column 0 is the padding id and never
    competes. ``targets`` is [N] with ids in 1..I. ``exclude`` is an optional bool
    [N, I+1] mask of history items to leave out of the competition (the usual
    "history masked" protocol); the target itself is never excluded, because a
    user may legitimately re-interact with an item, and dropping it would make the
    row unrankable. Same >= tie rule as ``sampled_ranks``.

    Memory is a few bool tensors the size of ``scores``: call it per batch of users.
    """
    scores = torch.as_tensor(scores)
    targets = torch.as_tensor(targets, device=scores.device)
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [N, I+1], got shape {tuple(scores.shape)}")
    n, n_cols = scores.shape
    if n == 0:
        raise ValueError("empty input: no rows to rank")
    if n_cols < 2:
        raise ValueError(f"scores needs column 0 (padding) plus at least one item, got {n_cols} columns")
    if targets.shape != (n,):
        raise ValueError(f"targets must be 1-D [N={n}], got shape {tuple(targets.shape)}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer item ids, got dtype {targets.dtype}")
    if int(targets.min()) < 1 or int(targets.max()) >= n_cols:
        raise ValueError(
            f"targets must be item ids in 1..{n_cols - 1} (0 is padding), "
            f"got range {int(targets.min())}..{int(targets.max())}"
        )
    if exclude is not None:
        exclude = torch.as_tensor(exclude, device=scores.device)
        if exclude.shape != scores.shape:
            raise ValueError(f"exclude must have the shape of scores {tuple(scores.shape)}, got {tuple(exclude.shape)}")
        if exclude.dtype != torch.bool:
            raise ValueError(f"exclude must be a bool mask, got dtype {exclude.dtype}")

    rows = torch.arange(n, device=scores.device)
    pos = scores[rows, targets]

    # Competitors: every real item except the target itself and excluded history.
    competes = torch.ones_like(scores, dtype=torch.bool)
    competes[:, 0] = False
    if exclude is not None:
        competes.masked_fill_(exclude, False)
    competes[rows, targets] = False

    _raise_on_nan_rows(pos.isnan() | (scores.isnan() & competes).any(dim=1), "full_ranks")
    return ((scores >= pos.unsqueeze(1)) & competes).sum(dim=1, dtype=torch.int64)


def per_user_metrics(ranks: ArrayLike) -> dict[str, Tensor]:
    """HR@{1,5,10}, NDCG@{5,10} and MRR of each user in percent (0 or 100 for HR; float64 [N] each), from
    0-based ranks: what paired comparisons resample, and whose means are `metrics_from_ranks`.

    With a single relevant item the ideal DCG is 1, so NDCG@k = 1/log2(rank+2) inside the cut-off, else 0.
    """
    r = torch.as_tensor(ranks)
    if r.dim() != 1:
        raise ValueError(f"ranks must be 1-D [N], got shape {tuple(r.shape)}")
    if r.numel() == 0:
        raise ValueError("empty input: no ranks")
    if r.is_floating_point() or r.is_complex() or r.dtype == torch.bool:
        raise ValueError(f"ranks must be integers, got dtype {r.dtype}")
    if int(r.min()) < 0:
        raise ValueError(f"ranks must be >= 0, got minimum {int(r.min())}")

    r = r.to(torch.float64)
    gain = 1.0 / torch.log2(r + 2.0)
    out: dict[str, Tensor] = {}
    for k in (1, 5, 10):
        out[f"HR@{k}"] = 100.0 * (r < k).to(torch.float64)
    for k in (5, 10):
        out[f"NDCG@{k}"] = 100.0 * torch.where(r < k, gain, 0.0)
    out["MRR"] = 100.0 / (r + 1.0)
    return {name: out[name] for name in METRIC_NAMES}


def metrics_from_ranks(ranks: ArrayLike) -> dict[str, float]:
    """HR@{1,5,10}, NDCG@{5,10} and MRR in percent (0..100), the means over users of `per_user_metrics`.

    Percent matches the paper's tables.
    """
    return {name: float(values.mean()) for name, values in per_user_metrics(ranks).items()}


@dataclass
class MetricsRow:
    """One model's results: what every stage writes to its `metrics.json` and the table and report read.

    `valid` and `test` hold the metrics in percent (plus `seconds` and, optionally, `full_*`); `params`
    the total, trainable and at-inference parameter counts; `details` what only some models have
    (distillation settings and boundaries, the teacher's parameter counts).
    """

    model: str
    target: str
    layers: int | None
    valid: dict[str, float]
    test: dict[str, float]
    params: dict[str, int]
    train_seconds: float
    inference_seconds: float
    best_step: int | None
    best_valid_mrr: float | None
    details: dict[str, Any]

    @classmethod
    def scored(
        cls,
        model: str,
        target: str,
        recommender: Recommender,
        scores: dict[str, dict[str, float]],
        *,
        train_seconds: float = 0.0,
        best_step: int | None = None,
        best_valid_mrr: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> MetricsRow:
        """The row of a scored `Recommender`; inference time is the time to score the test split."""
        return cls(
            model=model,
            target=target,
            layers=recommender.num_layers,
            valid=scores["valid"],
            test=scores["test"],
            params=recommender.parameter_counts(),
            train_seconds=train_seconds,
            inference_seconds=scores["test"]["seconds"],
            best_step=best_step,
            best_valid_mrr=best_valid_mrr,
            details=details or {},
        )

    def __post_init__(self) -> None:
        """Every ranking metric is a percentage: a value outside [0, 100] is a bug or another file's."""
        for split, values in (("valid", self.valid), ("test", self.test)):
            for name, value in values.items():
                if name != "seconds" and not 0 <= value <= 100:
                    raise MetricsRowError(f"the row of {self.model}: {split} {name} = {value} is not a percentage")

    def write(self, path: str | os.PathLike) -> None:
        missing = [name for name in METRIC_NAMES for split in (self.valid, self.test) if name not in split]
        if missing:
            raise MetricsRowError(f"{path}: the row of {self.model} lacks metrics {sorted(set(missing))}")
        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: str | os.PathLike) -> MetricsRow:
        data = read_artifact(path, read_json)
        if not isinstance(data, dict):
            raise MetricsRowError(f"{path}: not a metrics row (a JSON object); rerun the stage that wrote it")
        fields_ = [f.name for f in fields(cls)]
        missing = [name for name in fields_ if name not in data]
        unknown = [name for name in data if name not in fields_]
        if missing or unknown:
            raise MetricsRowError(
                f"{path}: not a metrics row (missing {missing}, unknown {unknown}); rerun the stage that wrote it"
            )
        return cls(**data)
