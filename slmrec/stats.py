"""Paired comparisons of two models on the same users, the same held-out items and the same negatives.

The unit is the user: each user's metric under model A minus under model B. The mean of those differences is
the effect; a paired bootstrap over users gives its 95% interval (`scipy.stats.bootstrap`, percentile method),
and a paired randomization test (the two models' values swapped within users at random, i.e. the differences'
signs flipped; `scipy.stats.permutation_test`) its two-sided p-value.

Several seeds: each seed's ranks are of the same users (the data and negatives do not depend on the seed), so a
user's metric is first averaged over the seeds of each model, and the users are then resampled as above. The
interval therefore speaks of these seeds' mean on users like these, not of the spread between seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from slmrec import markdown
from slmrec.metrics import METRIC_NAMES, SPLITS, per_user_metrics

CONFIDENCE = 0.95
RESAMPLES = 9999


@dataclass(frozen=True)
class PairedDifference:
    """A minus B on one metric, in points: the mean over users, its 95% interval and the p-value."""

    metric: str
    mean: float
    low: float
    high: float
    p_value: float
    users: int
    seeds: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def text(self) -> str:
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}], p = {self.p_value:.3g}"


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a - b, axis=axis)


def paired_difference(
    ranks_a: np.ndarray, ranks_b: np.ndarray, metric: str, *, seed: int = 0, resamples: int = RESAMPLES
) -> PairedDifference:
    """A minus B on `metric` from 0-based ranks of the same users, [users] or [seeds, users] each."""
    a, b = np.atleast_2d(ranks_a), np.atleast_2d(ranks_b)
    if a.shape != b.shape:
        raise ValueError(f"the two models' ranks are not of the same seeds and users: {a.shape} and {b.shape}")
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRIC_NAMES)}")
    per_user_a = np.mean([per_user_metrics(row)[metric].numpy() for row in a], axis=0)  # [users]
    per_user_b = np.mean([per_user_metrics(row)[metric].numpy() for row in b], axis=0)
    mean = float(np.mean(per_user_a - per_user_b))
    if np.array_equal(per_user_a, per_user_b):  # nothing to resample: scipy would warn of a degenerate sample
        return PairedDifference(metric, 0.0, 0.0, 0.0, 1.0, a.shape[1], a.shape[0])
    data = (per_user_a, per_user_b)
    rng = np.random.default_rng(seed)
    interval = stats.bootstrap(
        data,
        _mean_difference,
        paired=True,
        vectorized=True,
        confidence_level=CONFIDENCE,
        n_resamples=resamples,
        method="percentile",
        rng=rng,
    ).confidence_interval
    test = stats.permutation_test(
        data, _mean_difference, permutation_type="samples", vectorized=True, n_resamples=resamples, rng=rng
    )
    return PairedDifference(
        metric, mean, float(interval.low), float(interval.high), float(test.pvalue), a.shape[1], a.shape[0]
    )


SIGNIFICANCE = 0.05


def verdict(valid: PairedDifference, test: PairedDifference) -> str:
    """Whether "A beats B" holds: only when both intervals exclude zero on the same side and both p < 0.05
    (validation, where choices are made, and test, where they are checked). Otherwise the interval is given."""
    significant = all(d.excludes_zero and d.p_value < SIGNIFICANCE for d in (valid, test))
    if significant and valid.low > 0 and test.low > 0:
        return "holds"
    if significant and valid.high < 0 and test.high < 0:
        return "reversed: B beats A"
    return f"not distinguishable here (test [{test.low:+.2f}, {test.high:+.2f}])"


def paired_ranks(
    frames_a: Sequence[pl.DataFrame], frames_b: Sequence[pl.DataFrame], split: str, column: str = "rank"
) -> tuple[np.ndarray, np.ndarray]:
    """Two models' ranks on `split` from their ranks tables, one table per seed each, as [seeds, users] arrays
    in user order. Each seed's two tables must hold the same users and held-out items (the same data and
    negatives), and every seed the same users."""
    if len(frames_a) != len(frames_b) or not frames_a:
        raise ValueError(f"expected one ranks table per seed for each model, got {len(frames_a)} and {len(frames_b)}")
    a, b, users = [], [], None
    for seed, (frame_a, frame_b) in enumerate(zip(frames_a, frames_b, strict=True), 1):
        rows_a, rows_b = (f.filter(pl.col("split") == split).sort("user") for f in (frame_a, frame_b))
        if not rows_a["user"].equals(rows_b["user"]) or not rows_a["item"].equals(rows_b["item"]):
            raise ValueError(f"seed {seed}: the two models' {split} ranks are not of the same users and held-out items")
        if rows_a[column].null_count():
            raise ValueError(f"seed {seed}: no {column} on {split} (full ranking was off)")
        if users is not None and not rows_a["user"].equals(users):
            raise ValueError(f"seed {seed}: other users than seed 1's; seeds must share the data")
        users = rows_a["user"]
        a.append(rows_a[column].to_numpy())
        b.append(rows_b[column].to_numpy())
    return np.stack(a), np.stack(b)


def compare_ranks(
    frames_a: Sequence[pl.DataFrame], frames_b: Sequence[pl.DataFrame], metrics: Sequence[str], column: str = "rank"
) -> dict[str, dict[str, PairedDifference]]:
    """A minus B by split (valid, test) and metric, from one ranks table per seed for each model."""
    result: dict[str, dict[str, PairedDifference]] = {}
    for split in SPLITS:
        a, b = paired_ranks(frames_a, frames_b, split, column)
        result[split] = {metric: paired_difference(a, b, metric) for metric in metrics}
    return result


def comparison_table(
    compared: Sequence[tuple[str, dict[str, dict[str, PairedDifference]]]], metrics: Sequence[str]
) -> str:
    """Markdown: one row per comparison ("A − B", `compare_ranks`' result), each metric's difference with its
    interval and p-value on validation and test, and the verdict on the first metric."""
    header = ["A − B", "seeds × users", *(f"{split} {m}" for m in metrics for split in SPLITS), "verdict"]
    lines = []
    for label, diffs in compared:
        first = diffs["test"][metrics[0]]
        cells = [diffs[split][m].text() for m in metrics for split in SPLITS]
        lines.append([label, f"{first.seeds} × {first.users}", *cells, verdict(diffs["valid"][metrics[0]], first)])
    return markdown.table(header, lines)
