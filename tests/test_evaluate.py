"""The shared evaluation protocol: inputs, cross-checks, exact ranks on a hand-made model, and popularity."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import torch
from helpers_data import data_inputs, ranking_metrics, stage_call

from slmrec.batching import pad_left
from slmrec.data.samples import load_eval_splits
from slmrec.errors import ArtifactError, DataError
from slmrec.evaluate import evaluate, read_ranks, score_recommender, split_metrics
from slmrec.metrics import METRIC_NAMES, MetricsRow, metrics_from_ranks
from slmrec.models.popularity import Popularity
from slmrec.models.recommender import Recommender
from slmrec.stages import popularity

NUM_ITEMS = 10
# user: (train, valid, test)
SPLITS = {1: ([1, 2, 3], 4, 5), 2: ([6, 7], 8, 9), 3: ([8, 2, 5], 10, 1)}
# user: (valid negatives, test negatives); never the target, as the negatives rule guarantees.
NEGATIVES = {1: ([8, 10, 6], [7, 9, 6]), 2: ([10, 4, 2], [3, 2, 1]), 3: ([3, 7, 9], [3, 4, 9])}
# A one-dimensional "model": every user vector is [1], so an item's score is its entry here.
SCORES = [0, 5, 1, 2, 7, 3, 6, 4, 8, 2, 9]  # item 0 is padding; items 3 and 9 tie at 2
# Hand-computed 0-based ranks (number of candidates scoring >= the positive).
SAMPLED_RANKS = {"valid": [2, 1, 0], "test": [2, 2, 1]}  # user 2's test: item 3 ties with target 9
FULL_RANKS = {"valid": [2, 1, 0], "test": [4, 5, 2]}  # history masked: user 3's item 8 and 10 don't count


def splits_frame(splits=SPLITS) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": list(splits),
            "train": [s[0] for s in splits.values()],
            "valid": [s[1] for s in splits.values()],
            "test": [s[2] for s in splits.values()],
        },
        schema={"user": pl.Int32, "train": pl.List(pl.Int32), "valid": pl.Int32, "test": pl.Int32},
    )


def negatives_frame(negatives=NEGATIVES) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": list(negatives),
            "valid": [n[0] for n in negatives.values()],
            "test": [n[1] for n in negatives.values()],
        },
        schema={"user": pl.Int32, "valid": pl.List(pl.Int32), "test": pl.List(pl.Int32)},
    )


@pytest.fixture
def files(tmp_path):
    def write(splits=SPLITS, negatives=NEGATIVES, num_items=NUM_ITEMS):
        paths = SimpleNamespace(
            splits=str(tmp_path / "splits.parquet"),
            negatives=str(tmp_path / "negatives.parquet"),
            stats=str(tmp_path / "stats.json"),
        )
        splits_frame(splits).write_parquet(paths.splits)
        negatives_frame(negatives).write_parquet(paths.negatives)
        Path(paths.stats).write_text(json.dumps({"items": num_items, "users": len(splits)}))
        return paths

    return write


class RecordingEncoder:
    """Returns [1] for every user and keeps the padded batches it was given."""

    def __init__(self):
        self.batches: list[torch.Tensor] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.batches.append(batch.clone())
        return torch.ones(len(batch), 1)


def item_table(scores=SCORES) -> torch.Tensor:
    return torch.tensor(scores, dtype=torch.float32).unsqueeze(1)


# --- pad_left ----------------------------------------------------------------------------------


def test_pad_left_pads_and_truncates():
    batch = pad_left([[1, 2, 3], [4], [], [5, 6, 7, 8, 9, 10]], 4)
    assert batch.dtype == torch.long
    assert batch.tolist() == [[0, 1, 2, 3], [0, 0, 0, 4], [0, 0, 0, 0], [7, 8, 9, 10]]
    assert pad_left([[1, 2]], 2).tolist() == [[1, 2]]
    assert pad_left([], 3).shape == (0, 3)


# --- load_eval_splits --------------------------------------------------------------------------


def test_load_eval_splits_protocol(files):
    paths = files()
    splits = load_eval_splits(paths.splits, paths.negatives, NUM_ITEMS)
    assert set(splits) == {"valid", "test"}
    valid, test = splits["valid"], splits["test"]
    assert valid.name == "valid" and test.name == "test"
    assert valid.users.tolist() == test.users.tolist() == [1, 2, 3]
    # Validation: input train, target valid. Test: input train + [valid], target test.
    assert valid.histories == [s[0] for s in SPLITS.values()]
    assert test.histories == [s[0] + [s[1]] for s in SPLITS.values()]
    assert valid.targets.tolist() == [4, 8, 10]
    assert test.targets.tolist() == [5, 9, 1]
    assert valid.negatives.tolist() == [n[0] for n in NEGATIVES.values()]
    assert test.negatives.tolist() == [n[1] for n in NEGATIVES.values()]
    assert len(valid) == len(test) == 3


@pytest.mark.parametrize(
    "negatives",
    [
        pytest.param(dict(reversed(NEGATIVES.items())), id="other-order"),
        pytest.param({1: NEGATIVES[1], 2: NEGATIVES[2]}, id="missing-user"),
        pytest.param({**NEGATIVES, 4: ([1, 2, 3], [1, 2, 3])}, id="extra-user"),
        pytest.param({1: NEGATIVES[1], 2: NEGATIVES[2], 7: NEGATIVES[3]}, id="other-users"),
    ],
)
def test_negatives_for_other_users_are_refused(files, negatives):
    paths = files(negatives=negatives)
    with pytest.raises(DataError, match="does not hold the users"):
        load_eval_splits(paths.splits, paths.negatives, NUM_ITEMS)


@pytest.mark.parametrize("split,column", [("valid", 0), ("test", 1)])
def test_negative_equal_to_the_target_is_refused(files, split, column):
    negatives = {user: list(map(list, pair)) for user, pair in NEGATIVES.items()}
    target = SPLITS[2][1] if split == "valid" else SPLITS[2][2]
    negatives[2][column][1] = target
    paths = files(negatives=negatives)
    with pytest.raises(DataError, match=rf"user 2's {split} negatives contain its own {split} item"):
        load_eval_splits(paths.splits, paths.negatives, NUM_ITEMS)


def test_uneven_negative_lengths_are_refused(files):
    negatives = {**NEGATIVES, 2: ([10, 4], [3, 2, 1])}
    paths = files(negatives=negatives)
    with pytest.raises(DataError, match="uneven lengths"):
        load_eval_splits(paths.splits, paths.negatives, NUM_ITEMS)


def test_candidates_beyond_the_item_table_are_refused(files):
    paths = files()
    with pytest.raises(DataError, match=r"item id 10 .* larger than the item table \(9 items\)"):
        load_eval_splits(paths.splits, paths.negatives, NUM_ITEMS - 1)
    negatives = {**NEGATIVES, 1: ([8, 10, 6], [7, 9, 11])}
    paths = files(negatives=negatives)
    with pytest.raises(DataError, match="item id 11"):
        load_eval_splits(paths.splits, paths.negatives, NUM_ITEMS)


# --- evaluate ----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 256])
def test_evaluate_gives_the_hand_computed_ranks(files, batch_size):
    splits = load_eval_splits(files().splits, files().negatives, NUM_ITEMS)
    for name, split in splits.items():
        encoder = RecordingEncoder()
        metrics = evaluate(encoder, item_table(), split, max_len=2, batch_size=batch_size, full_ranking=False)
        assert set(metrics) == {*METRIC_NAMES, "seconds"}
        assert metrics["seconds"] >= 0
        expected = metrics_from_ranks(torch.tensor(SAMPLED_RANKS[name]))
        assert {k: metrics[k] for k in METRIC_NAMES} == pytest.approx(expected)
        # The encoder saw each history's last max_len items, left-padded, in row order.
        assert torch.equal(torch.cat(encoder.batches), pad_left(split.histories, 2))
        assert all(len(b) <= batch_size for b in encoder.batches)


def test_evaluate_metric_values_by_hand(files):
    valid = load_eval_splits(files().splits, files().negatives, NUM_ITEMS)["valid"]
    metrics = evaluate(RecordingEncoder(), item_table(), valid, max_len=5, full_ranking=False)
    # Ranks 2, 1, 0 among 1 + 3 candidates.
    assert metrics["HR@1"] == pytest.approx(100 / 3)
    assert metrics["HR@5"] == metrics["HR@10"] == pytest.approx(100)
    ndcg = 100 * (1 / math.log2(4) + 1 / math.log2(3) + 1) / 3
    assert metrics["NDCG@5"] == metrics["NDCG@10"] == pytest.approx(ndcg)
    assert metrics["MRR"] == pytest.approx(100 * (1 / 3 + 1 / 2 + 1) / 3)


def test_ties_count_against_the_model(files):
    splits = load_eval_splits(files().splits, files().negatives, NUM_ITEMS)
    constant = torch.full((NUM_ITEMS + 1, 1), 0.5)
    for split in splits.values():
        metrics = evaluate(RecordingEncoder(), constant, split, max_len=3, full_ranking=True)
        assert metrics["HR@1"] == 0
        assert metrics["MRR"] == pytest.approx(100 / 4)  # last of 1 + 3 candidates
        assert metrics["full_HR@1"] == 0
    # One tie on its own: user 2's test target (score 2) against item 3 (score 2).
    test = splits["test"]
    scores = list(SCORES)
    scores[3] = 2.0001  # strictly above: same rank as the tie
    assert evaluate(RecordingEncoder(), item_table(scores), test, 3, full_ranking=False)["MRR"] == pytest.approx(
        evaluate(RecordingEncoder(), item_table(), test, 3, full_ranking=False)["MRR"]
    )
    scores[3] = 1.9999  # strictly below: one rank better for user 2
    better = metrics_from_ranks(torch.tensor([2, 1, 1]))
    assert evaluate(RecordingEncoder(), item_table(scores), test, 3, full_ranking=False)["MRR"] == pytest.approx(
        better["MRR"]
    )


def test_full_ranking_masks_history(files):
    splits = load_eval_splits(files().splits, files().negatives, NUM_ITEMS)
    for name, split in splits.items():
        metrics = evaluate(RecordingEncoder(), item_table(), split, max_len=2, batch_size=2, full_ranking=True)
        assert set(metrics) == {*METRIC_NAMES, *(f"full_{k}" for k in METRIC_NAMES), "seconds"}
        full = metrics_from_ranks(torch.tensor(FULL_RANKS[name]))
        assert {k: metrics[f"full_{k}"] for k in METRIC_NAMES} == pytest.approx(full)
        sampled = metrics_from_ranks(torch.tensor(SAMPLED_RANKS[name]))
        assert {k: metrics[k] for k in METRIC_NAMES} == pytest.approx(sampled)


def test_full_ranking_masks_the_whole_history_not_just_the_window(files):
    """max_len=1 feeds only the newest item, but every history item is still masked."""
    test = load_eval_splits(files().splits, files().negatives, NUM_ITEMS)["test"]
    metrics = evaluate(RecordingEncoder(), item_table(), test, max_len=1, full_ranking=True)
    full = metrics_from_ranks(torch.tensor(FULL_RANKS["test"]))
    assert metrics["full_MRR"] == pytest.approx(full["MRR"])


def test_score_recommender_ranks_every_user_and_derives_the_metrics_from_the_ranks(files, tmp_path):
    splits = load_eval_splits(files().splits, files().negatives, NUM_ITEMS)
    recommender = SimpleNamespace(user_vectors=RecordingEncoder(), item_table=item_table())
    scores = score_recommender(recommender, splits, max_len=2, batch_size=2, full_ranking=True)
    for name in ("valid", "test"):
        rows = scores.ranks.filter(pl.col("split") == name)
        assert rows["user"].to_list() == list(SPLITS)
        assert rows["item"].to_list() == [s[1] if name == "valid" else s[2] for s in SPLITS.values()]
        assert rows["rank"].to_list() == SAMPLED_RANKS[name]
        assert rows["full_rank"].to_list() == FULL_RANKS[name]
    scores.write(tmp_path / "ranks.parquet")
    metrics = scores.metrics()
    assert split_metrics(read_ranks(tmp_path / "ranks.parquet")) == {
        name: ranking_metrics(m) for name, m in metrics.items()
    }
    assert {k: metrics["test"][k] for k in METRIC_NAMES} == pytest.approx(
        metrics_from_ranks(torch.tensor(SAMPLED_RANKS["test"]))
    )
    assert metrics["test"]["full_MRR"] == pytest.approx(metrics_from_ranks(torch.tensor(FULL_RANKS["test"]))["MRR"])


def test_sampled_only_ranks_have_no_full_metrics(files):
    splits = load_eval_splits(files().splits, files().negatives, NUM_ITEMS)
    recommender = SimpleNamespace(user_vectors=RecordingEncoder(), item_table=item_table())
    scores = score_recommender(recommender, splits, max_len=2, batch_size=2, full_ranking=False)
    assert scores.ranks["full_rank"].null_count() == len(scores.ranks)
    assert not any(k.startswith("full_") for k in scores.metrics()["valid"])


def test_read_ranks_refuses_another_table(tmp_path):
    path = tmp_path / "ranks.parquet"
    pl.DataFrame({"user": [1], "rank": [0]}).write_parquet(path)
    with pytest.raises(ArtifactError, match=r"ranks.parquet: not a ranks table .*rerun the stage"):
        read_ranks(path)


def test_evaluate_accepts_half_precision_tables(files):
    valid = load_eval_splits(files().splits, files().negatives, NUM_ITEMS)["valid"]
    metrics = evaluate(RecordingEncoder(), item_table().to(torch.bfloat16), valid, max_len=2, full_ranking=False)
    assert metrics["MRR"] == pytest.approx(metrics_from_ranks(torch.tensor(SAMPLED_RANKS["valid"]))["MRR"])


def test_evaluate_refuses_nan_scores(files):
    valid = load_eval_splits(files().splits, files().negatives, NUM_ITEMS)["valid"]
    with pytest.raises(ValueError, match="NaN"):
        evaluate(
            lambda batch: torch.full((len(batch), 1), float("nan")), item_table(), valid, max_len=2, full_ranking=False
        )


# --- popularity --------------------------------------------------------------------------------

# Training counts: item 2 twice; 1, 3, 5, 6, 7, 8 once; 4, 9, 10 never.
COUNTS = [0, 1, 2, 1, 0, 1, 1, 1, 1, 0, 0]
POPULARITY_RANKS = {"valid": [3, 1, 3], "test": [2, 3, 1]}


def test_popularity_table_counts_training_items():
    train = splits_frame()["train"].to_list()
    table = Popularity(train, NUM_ITEMS).item_table
    assert table.shape == (NUM_ITEMS + 1, 1)
    assert table.dtype == torch.float32
    assert table[:, 0].tolist() == COUNTS
    # Items that never occur in training still get a row.
    assert Popularity(train, NUM_ITEMS + 3).item_table[-3:, 0].tolist() == [0, 0, 0]
    assert isinstance(Popularity(train, NUM_ITEMS), Recommender)


def run_popularity(paths, output, full_ranking: bool) -> MetricsRow:
    params = {"target": "popularity", "evaluate": {"full_ranking": full_ranking}}
    return popularity.run(stage_call("popularity", data_inputs(paths), output, params))


def test_popularity_run_writes_metrics_and_manifest(files, tmp_path):
    paths = files()
    output = SimpleNamespace(
        metrics=str(tmp_path / "pop" / "metrics.json"),
        ranks=str(tmp_path / "pop" / "ranks.parquet"),
        manifest=str(tmp_path / "pop" / "manifest.json"),
    )
    returned = run_popularity(paths, output, full_ranking=True)
    metrics = json.loads(Path(output.metrics).read_text())
    assert metrics == json.loads(json.dumps(asdict(returned)))
    assert MetricsRow.read(output.metrics) == returned
    assert metrics["model"] == "Popularity"
    for name, ranks in POPULARITY_RANKS.items():
        expected = metrics_from_ranks(torch.tensor(ranks))
        assert {k: metrics[name][k] for k in METRIC_NAMES} == pytest.approx(expected)
        assert f"full_{METRIC_NAMES[0]}" in metrics[name]
        assert metrics[name]["seconds"] >= 0
    assert metrics["params"] == {"total": 0, "trainable": 0, "inference": 0}
    assert metrics["inference_seconds"] == metrics["test"]["seconds"]
    manifest = json.loads(Path(output.manifest).read_text())
    assert manifest["stage"] == "popularity"
    assert manifest["config"] == {"target": "popularity", "evaluate": {"full_ranking": True}}
    assert set(manifest["inputs"]) == {paths.splits, paths.negatives, paths.stats}
    assert list(manifest["outputs"]) == [output.metrics, output.ranks]
    ranks = read_ranks(output.ranks)
    assert ranks.filter(pl.col("split") == "test")["rank"].to_list() == POPULARITY_RANKS["test"]
    assert split_metrics(ranks)["test"] == ranking_metrics(metrics["test"])


def test_popularity_run_refuses_mismatched_negatives(files, tmp_path):
    paths = files(negatives=dict(reversed(NEGATIVES.items())))
    output = SimpleNamespace(metrics=str(tmp_path / "m.json"), manifest=str(tmp_path / "man.json"))
    with pytest.raises(DataError):
        run_popularity(paths, output, full_ranking=False)
    assert not Path(output.metrics).exists() and not Path(output.manifest).exists()
