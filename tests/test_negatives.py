"""Evaluation negatives: never a user's item, exactly K unique per row, reproducible, uniform."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from helpers_data import stage_call
from polars.testing import assert_frame_equal

from slmrec.data.negatives import draw_negatives
from slmrec.errors import DataError
from slmrec.stages.negatives import run

NUM_ITEMS = 40
K = 25

# Histories of different lengths; the longest leaves exactly K eligible items (40 - 15 = 25).
HISTORIES = {
    1: ([1, 2, 3], 4, 5),
    2: ([40, 39], 38, 1),
    3: ([7, 8, 9, 10, 11, 12, 13], 14, 15),
    4: (list(range(16, 29)), 29, 30),
}


def make_splits(histories: dict[int, tuple[list[int], int, int]] = HISTORIES) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": list(histories),
            "train": [train for train, _, _ in histories.values()],
            "valid": [valid for _, valid, _ in histories.values()],
            "test": [test for _, _, test in histories.values()],
        },
        schema={"user": pl.Int32, "train": pl.List(pl.Int32), "valid": pl.Int32, "test": pl.Int32},
    )


def history(user: int) -> set[int]:
    train, valid, test = HISTORIES[user]
    return {*train, valid, test}


@pytest.fixture(scope="module")
def drawn() -> pl.DataFrame:
    return draw_negatives(make_splits(), NUM_ITEMS, K, seed=11)


def test_columns_and_one_row_per_user(drawn):
    assert drawn.columns == ["user", "valid", "test"]
    assert drawn["user"].to_list() == [1, 2, 3, 4]
    assert drawn.schema["valid"] == pl.List(pl.Int32) and drawn.schema["test"] == pl.List(pl.Int32)


def test_negatives_never_include_the_users_items(drawn):
    for user, valid, test in drawn.iter_rows():
        seen = history(user)
        assert not seen & set(valid), user
        assert not seen & set(test), user
        # Including the held-out valid and test items themselves.
        assert HISTORIES[user][1] not in valid and HISTORIES[user][2] not in test


def test_exactly_k_unique_items_in_range(drawn):
    for _, valid, test in drawn.iter_rows():
        for row in (valid, test):
            assert len(row) == K
            assert len(set(row)) == K
            assert min(row) >= 1 and max(row) <= NUM_ITEMS  # never the padding id 0


def test_exactly_k_eligible_takes_them_all(drawn):
    # User 4 has 15 items out of 40: its 25 negatives are exactly the other items, in some order.
    _, valid, test = drawn.row(3)
    rest = set(range(1, NUM_ITEMS + 1)) - history(4)
    assert set(valid) == set(test) == rest


def test_reproducible_for_a_seed_and_different_for_another(drawn):
    again = draw_negatives(make_splits(), NUM_ITEMS, K, seed=11)
    assert_frame_equal(again, drawn)
    other = draw_negatives(make_splits(), NUM_ITEMS, K, seed=12)
    assert other["valid"].to_list() != drawn["valid"].to_list()
    assert other["test"].to_list() != drawn["test"].to_list()


def test_valid_and_test_are_drawn_independently(drawn):
    # Users 1-3 have more eligible items than K, so an independent draw differs from the other split's.
    for user, valid, test in drawn.iter_rows():
        if user != 4:
            assert valid != test, user
            assert set(valid) != set(test), user


def test_too_few_eligible_items_names_the_user_and_suggests_smaller_k():
    with pytest.raises(DataError) as err:
        draw_negatives(make_splits(), NUM_ITEMS, K + 1, seed=1)
    message = str(err.value)
    assert "user 4 " in message
    assert "25" in message  # how many it has
    assert "num_negatives" in message and "smaller" in message


def test_too_few_eligible_items_names_the_original_user_id():
    users = pl.DataFrame({"user": [1, 2, 3, 4], "user_id": ["AAA", "BBB", "CCC", "A3XYZ"]})
    with pytest.raises(DataError, match=r"user 4 \(A3XYZ\)"):
        draw_negatives(make_splits(), NUM_ITEMS, K + 1, seed=1, users=users)


def write_stage_inputs(tmp_path: Path, histories: dict[int, tuple[list[int], int, int]]) -> dict[str, Path]:
    """The negatives stage's inputs for `histories` over NUM_ITEMS items."""
    inputs = {"splits": tmp_path / "splits.parquet", "stats": tmp_path / "stats.json", "user_ids": tmp_path / "u.pq"}
    make_splits(histories).write_parquet(inputs["splits"])
    inputs["stats"].write_text(json.dumps({"items": NUM_ITEMS}))
    names = ["AAA", "BBB", "CCC", "DDD"][: len(histories)]
    pl.DataFrame({"user": list(histories), "user_id": names}).write_parquet(inputs["user_ids"])
    return inputs


def test_a_k_too_large_for_the_catalogue_is_lowered_to_the_true_maximum(tmp_path: Path, caplog):
    # User 1 is the first short of 31 (30 eligible), but user 3 has only 20: 20 is the most that works.
    histories = {1: (list(range(1, 9)), 9, 10), 2: ([11, 12, 13], 14, 15), 3: (list(range(21, 39)), 39, 40)}
    out = SimpleNamespace(negatives=str(tmp_path / "neg.parquet"), manifest=str(tmp_path / "neg.manifest.json"))
    with caplog.at_level("WARNING"):
        drawn = run(
            stage_call(
                "negatives",
                write_stage_inputs(tmp_path, histories),
                out,
                {"negatives": {"num_negatives": 31, "seed": 1}},
            )
        )
    assert drawn["valid"].list.len().unique().to_list() == drawn["test"].list.len().unique().to_list() == [20]
    assert_frame_equal(pl.read_parquet(out.negatives), draw_negatives(make_splits(histories), NUM_ITEMS, 20, seed=1))
    manifest = json.loads(Path(out.manifest).read_text())
    assert manifest["num_negatives"] == 20 and manifest["config"]["negatives"]["num_negatives"] == 31
    assert "negatives.num_negatives = 31, but some user has only 20 of the 40 items left" in caplog.text
    assert "drawing 20 negatives per user instead" in caplog.text


def test_a_user_who_interacted_with_every_item_stops_the_stage_and_writes_nothing(tmp_path: Path):
    histories = {1: ([1, 2], 3, 4), 2: (list(range(1, NUM_ITEMS - 1)), NUM_ITEMS - 1, NUM_ITEMS)}
    out = SimpleNamespace(negatives=str(tmp_path / "neg.parquet"), manifest=str(tmp_path / "neg.manifest.json"))
    with pytest.raises(DataError, match=r"user 2 \(BBB\) has only 0 items .* no num_negatives works"):
        run(
            stage_call(
                "negatives",
                write_stage_inputs(tmp_path, histories),
                out,
                {"negatives": {"num_negatives": 5, "seed": 1}},
            )
        )
    assert not Path(out.negatives).exists() and not Path(out.manifest).exists()


def test_empty_item_table_is_an_error():
    with pytest.raises(DataError, match="0 items"):
        draw_negatives(make_splits(), 0, 1, 0)


def test_draw_is_roughly_uniform():
    # 1,500 users who all own items 1-3; every other item should be drawn equally often.
    users, num_items, k = 1500, 50, 10
    splits = make_splits({u: ([1], 2, 3) for u in range(1, users + 1)})
    negatives = draw_negatives(splits, num_items, k, seed=2025)
    for split in ("valid", "test"):
        items = negatives[split].explode().to_numpy()
        counts = np.bincount(items, minlength=num_items + 1)
        assert counts[:4].sum() == 0  # padding and the users' items
        observed = counts[4:]
        expected = users * k / (num_items - 3)  # about 319 draws per item
        chi2 = float(((observed - expected) ** 2 / expected).sum())
        # 46 degrees of freedom: mean 46, sd about 9.6. A biased sampler lands far above 100.
        assert chi2 < 100, (split, chi2)
        assert observed.max() / observed.min() < 1.5, (split, observed.min(), observed.max())


def test_draw_is_uniform_over_the_complement_of_varied_histories():
    # Item 1 is owned by half the users; it must be drawn about half as often as an unowned item.
    users, num_items, k = 2000, 30, 5
    rng = np.random.default_rng(0)
    histories = {}
    for u in range(1, users + 1):
        others = [int(x) for x in rng.choice(np.arange(2, num_items + 1), size=3, replace=False)]
        histories[u] = (([1] if u % 2 else []) + others[:1], others[1], others[2])
    negatives = draw_negatives(make_splits(histories), num_items, k, seed=3)
    counts = np.bincount(negatives["valid"].explode().to_numpy(), minlength=num_items + 1)
    # Per user, any eligible item has probability k / eligible of being drawn.
    expected = np.zeros(num_items + 1)
    for train, valid, test in histories.values():
        owned = {*train, valid, test}
        for item in range(1, num_items + 1):
            if item not in owned:
                expected[item] += k / (num_items - len(owned))
    rel = np.abs(counts[1:] - expected[1:]) / expected[1:]
    assert rel.max() < 0.15, rel.max()
    assert counts[1] < 0.65 * counts[2:].mean()


def test_run_writes_the_artifact_and_manifest(tmp_path: Path):
    splits_path, stats_path, users_path = tmp_path / "splits.parquet", tmp_path / "stats.json", tmp_path / "users.pq"
    make_splits().write_parquet(splits_path)
    stats_path.write_text(json.dumps({"items": NUM_ITEMS}))
    pl.DataFrame({"user": [1, 2, 3, 4], "user_id": ["a", "b", "c", "d"]}).write_parquet(users_path)
    out = SimpleNamespace(negatives=str(tmp_path / "neg.parquet"), manifest=str(tmp_path / "neg.manifest.json"))
    cfg = {"num_negatives": K, "seed": 11}
    inputs = {"splits": splits_path, "stats": stats_path, "user_ids": users_path}
    result = run(stage_call("negatives", inputs, out, {"negatives": cfg}))
    stored = pl.read_parquet(out.negatives)
    assert_frame_equal(stored, result)
    assert_frame_equal(stored, draw_negatives(make_splits(), NUM_ITEMS, K, seed=11))
    manifest = json.loads(Path(out.manifest).read_text())
    assert manifest["stage"] == "negatives"
    assert manifest["config"] == {"negatives": cfg}
    assert manifest["num_negatives"] == K  # the K drawn: here the one asked for
    assert set(manifest["inputs"]) == {str(splits_path), str(stats_path), str(users_path)}
