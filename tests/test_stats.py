"""Paired comparisons (slmrec.stats): per-user differences, a paired bootstrap interval and a randomization p-value."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from slmrec.evaluate import RANK_SCHEMA
from slmrec.metrics import METRIC_NAMES, metrics_from_ranks
from slmrec.stats import compare_ranks, paired_difference, verdict

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


def ranks_table(ranks: np.ndarray, users: np.ndarray | None = None, items: np.ndarray | None = None) -> pl.DataFrame:
    """A model's ranks table (RANK_SCHEMA) with the same ranks on valid and test."""
    users = np.arange(1, len(ranks) + 1) if users is None else users
    items = users * 10 if items is None else items
    frames = [
        pl.DataFrame(
            {"split": split, "user": users, "item": items, "rank": ranks, "full_rank": None}, schema=RANK_SCHEMA
        )
        for split in ("valid", "test")
    ]
    return pl.concat(frames)


def test_tables_are_paired_user_by_user_whatever_their_row_order():
    better = RANKS.copy()
    better[:300] = 0
    a = ranks_table(better).sample(fraction=1.0, shuffle=True, seed=3)  # rows in another order
    b = ranks_table(RANKS)
    result = compare_ranks([a], [b], ["HR@1", "MRR"])
    assert result["test"]["HR@1"].mean == pytest.approx(paired_difference(better, RANKS, "HR@1").mean)
    assert verdict(result["valid"]["HR@1"], result["test"]["HR@1"]) == "holds"
    swapped = compare_ranks([b], [a], ["HR@1"])
    assert verdict(swapped["valid"]["HR@1"], swapped["test"]["HR@1"]) == "reversed: B beats A"
    same = compare_ranks([b], [b], ["MRR"])
    assert same["test"]["MRR"].p_value == 1.0
    assert verdict(same["valid"]["MRR"], same["test"]["MRR"]) == "not distinguishable here (test [+0.00, +0.00])"


def test_verdict_needs_both_splits():
    better = RANKS.copy()
    better[:300] = 0
    valid_only = pl.concat(
        [ranks_table(better).filter(pl.col("split") == "valid"), ranks_table(RANKS).filter(pl.col("split") == "test")]
    )
    result = compare_ranks([valid_only], [ranks_table(RANKS)], ["HR@1"])
    assert result["valid"]["HR@1"].excludes_zero and not result["test"]["HR@1"].excludes_zero
    assert verdict(result["valid"]["HR@1"], result["test"]["HR@1"]).startswith("not distinguishable here (test [")


def test_seeds_are_stacked_and_must_share_users_and_items():
    a = ranks_table(RANKS)
    result = compare_ranks([a, a], [ranks_table(RANKS[::-1].copy()), a], ["MRR"])
    assert (result["test"]["MRR"].seeds, result["test"]["MRR"].users) == (2, USERS)
    with pytest.raises(ValueError, match="seed 1: the two models' valid ranks are not of the same users and held-out"):
        compare_ranks([a], [ranks_table(RANKS, items=np.arange(USERS))], ["MRR"])
    other_users = ranks_table(RANKS, users=np.arange(2, USERS + 2))
    with pytest.raises(ValueError, match="seed 2: other users than seed 1's"):
        compare_ranks([a, other_users], [a, other_users], ["MRR"])
    with pytest.raises(ValueError, match="no full_rank on valid"):
        compare_ranks([a], [a], ["MRR"], column="full_rank")
