"""Property and example tests for slmrec.metrics (rank contract: ties count against)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from slmrec.errors import MetricsRowError
from slmrec.metrics import METRIC_NAMES, MetricsRow, full_ranks, metrics_from_ranks, sampled_ranks

SETTINGS = settings(max_examples=60, deadline=None)

# Small integer-valued float scores, so ties are frequent.
tie_scores = st.integers(min_value=0, max_value=3).map(float)


@st.composite
def pos_neg(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 6))
    k = draw(st.integers(1, 8))
    pos = draw(arrays(np.float32, (n,), elements=tie_scores))
    neg = draw(arrays(np.float32, (n, k), elements=tie_scores))
    return pos, neg


def reference_ranks(pos: np.ndarray, neg: np.ndarray) -> list[int]:
    return [sum(1 for x in row if x >= p) for p, row in zip(pos, neg, strict=True)]


def expected_metrics(ranks: list[int]) -> dict[str, float]:
    n = len(ranks)
    return {
        "HR@1": 100 * sum(r < 1 for r in ranks) / n,
        "HR@5": 100 * sum(r < 5 for r in ranks) / n,
        "HR@10": 100 * sum(r < 10 for r in ranks) / n,
        "NDCG@5": 100 * sum(1 / math.log2(r + 2) for r in ranks if r < 5) / n,
        "NDCG@10": 100 * sum(1 / math.log2(r + 2) for r in ranks if r < 10) / n,
        "MRR": 100 * sum(1 / (r + 1) for r in ranks) / n,
    }


# ---------------------------------------------------------------- sampled ranks


@pytest.mark.parametrize("k", [10, 99, 999])
def test_constant_scores_rank_last(k: int) -> None:
    ranks = sampled_ranks(torch.zeros(7), torch.zeros(7, k))
    assert ranks.dtype == torch.int64
    assert ranks.tolist() == [k] * 7
    m = metrics_from_ranks(ranks)
    for name in ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10"):
        assert m[name] == 0.0
    assert m["MRR"] == pytest.approx(100 / (k + 1), rel=1e-12, abs=0)


@SETTINGS
@given(pos_neg())
def test_positive_strictly_above_all_is_perfect(pn: tuple[np.ndarray, np.ndarray]) -> None:
    _, neg = pn
    pos = neg.max(axis=1) + 0.5
    ranks = sampled_ranks(pos, neg)
    assert ranks.tolist() == [0] * len(pos)
    assert metrics_from_ranks(ranks) == {name: 100.0 for name in METRIC_NAMES}


@SETTINGS
@given(pos_neg())
def test_sampled_ranks_match_reference(pn: tuple[np.ndarray, np.ndarray]) -> None:
    pos, neg = pn
    ranks = sampled_ranks(pos, neg)
    assert ranks.tolist() == reference_ranks(pos, neg)
    assert int(ranks.min()) >= 0 and int(ranks.max()) <= neg.shape[1]


@SETTINGS
@given(pos_neg(), st.integers(0, 2**32 - 1))
def test_invariant_to_permuting_negatives(pn: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    pos, neg = pn
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(neg, axis=1)  # independent permutation per row
    a, b = sampled_ranks(pos, neg), sampled_ranks(pos, shuffled)
    assert torch.equal(a, b)
    assert metrics_from_ranks(a) == metrics_from_ranks(b)


def test_random_scores_match_expectation() -> None:
    n, k = 20_000, 99
    g = torch.Generator().manual_seed(0)
    m = metrics_from_ranks(sampled_ranks(torch.rand(n, generator=g), torch.rand(n, k, generator=g)))
    # Under random scores the rank is uniform on 0..K.
    assert m["HR@10"] == pytest.approx(100 * 10 / (k + 1), abs=1.0)
    assert m["NDCG@10"] == pytest.approx(100 * sum(1 / math.log2(r + 2) for r in range(10)) / (k + 1), abs=0.5)
    assert m["MRR"] == pytest.approx(100 * sum(1 / r for r in range(1, k + 2)) / (k + 1), abs=0.5)


def test_hand_computed_example() -> None:
    m = metrics_from_ranks(torch.tensor([0, 3, 9, 10]))
    assert list(m) == list(METRIC_NAMES)
    assert all(type(v) is float for v in m.values())
    expected = {
        "HR@1": 25.0,
        "HR@5": 50.0,
        "HR@10": 75.0,
        "NDCG@5": 25 * (1 + 1 / math.log2(5)),  # 35.7669...
        "NDCG@10": 25 * (1 + 1 / math.log2(5) + 1 / math.log2(11)),  # 42.9935...
        "MRR": 25 * (1 + 1 / 4 + 1 / 10 + 1 / 11),  # 36.0227...
    }
    assert m == pytest.approx(expected, rel=1e-12)
    assert m["NDCG@5"] == pytest.approx(35.76691395, abs=1e-6)
    assert m["NDCG@10"] == pytest.approx(42.99353461, abs=1e-6)
    assert m["MRR"] == pytest.approx(36.02272727, abs=1e-6)


@SETTINGS
@given(st.lists(st.integers(0, 30), min_size=1, max_size=40))
def test_metrics_match_definition(ranks: list[int]) -> None:
    assert metrics_from_ranks(np.array(ranks)) == pytest.approx(expected_metrics(ranks), rel=1e-12, abs=1e-12)


def test_ties_count_against() -> None:
    # One tie and one strictly higher negative: rank 2, not 1.
    assert sampled_ranks([1.0], [[1.0, 2.0, 0.0]]).tolist() == [2]


# ---------------------------------------------------------------- full ranks


def test_full_ranks_hand_example() -> None:
    # ids:              pad   1    2    3    4    5
    scores = torch.tensor([[9.0, 1.0, 3.0, 1.0, 0.0, 2.0],
                           [9.0, 5.0, 5.0, 5.0, 5.0, 5.0]])  # fmt: skip
    targets = torch.tensor([1, 4])
    # Padding column 0 scores highest but never competes; 1 tie (id 3) + 2 higher (ids 2, 5).
    assert full_ranks(scores, targets).tolist() == [3, 4]
    exclude = torch.zeros_like(scores, dtype=torch.bool)
    exclude[0, 2] = True  # history item above the target is left out
    exclude[0, 1] = True  # target marked as history: still ranked
    exclude[1, [0, 1, 2]] = True
    assert full_ranks(scores, targets, exclude).tolist() == [2, 2]


def test_full_ranks_constant_scores_rank_last() -> None:
    n_items = 50
    ranks = full_ranks(torch.zeros(3, n_items + 1), torch.tensor([1, 25, 50]))
    assert ranks.tolist() == [n_items - 1] * 3


def test_full_ranks_accepts_numpy() -> None:
    scores = np.array([[0.0, 0.1, 0.9, 0.5]], dtype=np.float32)
    ranks = full_ranks(scores, np.array([3]), np.array([[False, False, True, False]]))
    assert ranks.dtype == torch.int64 and ranks.tolist() == [0]


@st.composite
def full_case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 5))
    n_items = draw(st.integers(2, 10))
    scores = draw(arrays(np.float32, (n, n_items + 1), elements=tie_scores))
    targets = draw(arrays(np.int64, (n,), elements=st.integers(1, n_items)))
    exclude = draw(arrays(np.bool_, (n, n_items + 1), elements=st.booleans()))
    return scores, targets, exclude


@SETTINGS
@given(full_case())
def test_full_ranks_equal_sampled_ranks_over_non_history(case: tuple[np.ndarray, ...]) -> None:
    scores, targets, exclude = case
    got = full_ranks(scores, targets, exclude).tolist()
    got_all = full_ranks(scores, targets).tolist()
    for i, t in enumerate(targets):
        items = np.arange(1, scores.shape[1])
        negatives = items[(items != t) & ~exclude[i, 1:]]
        pos = scores[i, t : t + 1]
        want = int(sampled_ranks(pos, scores[i, negatives][None])[0]) if negatives.size else 0
        assert got[i] == want
        # Without a mask every other real item competes.
        assert got_all[i] == int(sampled_ranks(pos, scores[i, items[items != t]][None])[0])


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("pos", "neg", "match"),
    [
        (torch.zeros(3), torch.zeros(4, 5), "disagree on N"),
        (torch.zeros(3, 1), torch.zeros(3, 5), "pos_scores must be 1-D"),
        (torch.zeros(3), torch.zeros(3), "neg_scores must be 2-D"),
        (torch.zeros(0), torch.zeros(0, 5), "empty"),
        (torch.zeros(3), torch.zeros(3, 0), "K=0"),
    ],
)
def test_sampled_shape_errors(pos: torch.Tensor, neg: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sampled_ranks(pos, neg)


def test_sampled_nan_raises_with_row_count() -> None:
    pos = torch.tensor([float("nan"), 1.0, 1.0])
    neg = torch.tensor([[0.0, 0.0], [0.0, float("nan")], [0.0, 0.0]])
    with pytest.raises(ValueError, match="2 of 3 rows contain NaN"):
        sampled_ranks(pos, neg)


def test_full_nan_raises_only_for_competing_scores() -> None:
    scores = torch.tensor([[float("nan"), 1.0, float("nan"), 0.0]])
    exclude = torch.tensor([[False, False, True, False]])
    # NaN in padding column and in an excluded history item does not affect the rank.
    assert full_ranks(scores, torch.tensor([1]), exclude).tolist() == [0]
    with pytest.raises(ValueError, match="1 of 1 rows contain NaN"):
        full_ranks(scores, torch.tensor([1]))  # NaN competitor id 2
    with pytest.raises(ValueError, match="NaN"):
        full_ranks(scores, torch.tensor([2]), exclude)  # NaN target, even if marked excluded


@pytest.mark.parametrize(
    ("scores", "targets", "exclude", "match"),
    [
        (torch.zeros(2, 4), torch.tensor([0, 1]), None, "0 is padding"),
        (torch.zeros(2, 4), torch.tensor([1, 4]), None, r"1\.\.3"),
        (torch.zeros(2, 4), torch.tensor([1.0, 2.0]), None, "integer"),
        (torch.zeros(2, 4), torch.tensor([1, 2, 3]), None, "targets must be 1-D"),
        (torch.zeros(4), torch.tensor([1]), None, "scores must be 2-D"),
        (torch.zeros(2, 1), torch.tensor([1, 1]), None, "padding"),
        (torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), None, "empty"),
        (torch.zeros(2, 4), torch.tensor([1, 2]), torch.zeros(2, 3, dtype=torch.bool), "shape of scores"),
        (torch.zeros(2, 4), torch.tensor([1, 2]), torch.zeros(2, 4), "bool mask"),
    ],
)
def test_full_ranks_errors(
    scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        full_ranks(scores, targets, exclude)


@pytest.mark.parametrize(
    ("ranks", "match"),
    [
        (torch.zeros(0, dtype=torch.int64), "empty"),
        (torch.zeros(2, 2, dtype=torch.int64), "1-D"),
        (torch.tensor([0.0, 1.0]), "integers"),
        (torch.tensor([0, -1]), ">= 0"),
    ],
)
def test_metrics_from_ranks_errors(ranks: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        metrics_from_ranks(ranks)


# --- the metrics row ---------------------------------------------------------------------------------


def _row() -> MetricsRow:
    scores = {name: 10.0 for name in METRIC_NAMES}
    return MetricsRow(
        "SASRec", "sasrec", 2, scores, scores, {"total": 1, "trainable": 1, "inference": 1}, 1.0, 0.5, 3, 10.0, {}
    )


@pytest.mark.parametrize("value", [-0.5, 100.5])
def test_a_metrics_row_holds_percentages_only(tmp_path, value):
    """Every stage's row is checked once, here: a metric outside [0, 100] is refused, written or read."""
    row = asdict(_row())
    row["test"]["NDCG@10"] = value
    with pytest.raises(MetricsRowError, match=rf"test NDCG@10 = {value} is not a percentage"):
        MetricsRow(**row)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(row))
    with pytest.raises(MetricsRowError, match="is not a percentage"):
        MetricsRow.read(path)


def test_metrics_row_round_trips(tmp_path):
    path = tmp_path / "metrics.json"
    _row().write(path)
    assert MetricsRow.read(path) == _row()


@pytest.mark.parametrize("field", [f.name for f in fields(MetricsRow)])
def test_a_row_lacking_a_field_is_refused(tmp_path, field):
    path = tmp_path / "metrics.json"
    _row().write(path)
    data = json.loads(path.read_text())
    del data[field]
    path.write_text(json.dumps(data))
    with pytest.raises(MetricsRowError, match=rf"{path}: not a metrics row \(missing \['{field}'\]"):
        MetricsRow.read(path)


def test_a_row_lacking_a_metric_is_never_written(tmp_path):
    row = _row()
    del row.test["MRR"]
    with pytest.raises(MetricsRowError, match="lacks metrics"):
        row.write(tmp_path / "metrics.json")
    assert not (tmp_path / "metrics.json").exists()
