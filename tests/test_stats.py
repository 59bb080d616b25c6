"""Paired comparisons (slmrec.stats): per-user differences, a paired bootstrap interval and a randomization p-value."""

from __future__ import annotations

import numpy as np
import pytest

from slmrec.metrics import METRIC_NAMES, metrics_from_ranks
from slmrec.stats import paired_difference

USERS = 900
RANKS = np.random.default_rng(0).integers(0, 100, size=USERS)


@pytest.mark.parametrize("metric", METRIC_NAMES)
def test_identical_ranks_differ_by_nothing(metric):
    result = paired_difference(RANKS, RANKS.copy(), metric)
    assert (result.mean, result.p_value) == (0.0, 1.0)
    assert result.low <= 0 <= result.high and not result.excludes_zero


def test_a_model_better_on_a_known_fraction_of_users_is_found_with_its_shift():
    better = RANKS.copy()
    better[:300] = 0  # a third of the users get their item first
    known = 100 * np.count_nonzero(RANKS[:300] >= 1) / USERS  # HR@1 points gained: those not first already
    result = paired_difference(better, RANKS, "HR@1")
    assert result.mean == pytest.approx(known)
    assert result.low < known < result.high and result.excludes_zero
    assert result.p_value < 0.01
    assert metrics_from_ranks(better)["HR@1"] - metrics_from_ranks(RANKS)["HR@1"] == pytest.approx(result.mean)


def test_seeds_are_averaged_within_each_user_before_users_are_resampled():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 100, size=(3, USERS))
    b = rng.integers(0, 100, size=(3, USERS))
    result = paired_difference(a, b, "MRR")
    per_seed = [metrics_from_ranks(a[s])["MRR"] - metrics_from_ranks(b[s])["MRR"] for s in range(3)]
    assert result.mean == pytest.approx(np.mean(per_seed))  # the mean over users of the seeds' mean
    assert (result.users, result.seeds) == (USERS, 3)
    assert result.low < result.mean < result.high
    # a seed repeated changes nothing: it is the same user's value again
    once = paired_difference(a[0], b[0], "MRR")
    twice = paired_difference(np.stack([a[0], a[0]]), np.stack([b[0], b[0]]), "MRR")
    assert (once.mean, once.low, once.high, once.p_value) == pytest.approx(
        (twice.mean, twice.low, twice.high, twice.p_value)
    )


def test_ranks_of_other_users_or_seeds_are_refused():
    with pytest.raises(ValueError, match="not of the same seeds and users"):
        paired_difference(RANKS, RANKS[:-1], "MRR")
    with pytest.raises(ValueError, match="unknown metric 'AUC'"):
        paired_difference(RANKS, RANKS, "AUC")
