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

from dataclasses import dataclass

import numpy as np
from scipy import stats

from slmrec.metrics import METRIC_NAMES, per_user_metrics

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
