"""Preprocess stage on small hand-made files: filters, iterative k-core, ordering, ids, splits, stats, bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from helpers_data import stage_call
from polars.testing import assert_frame_equal

from slmrec.data.preprocess import kcore, preprocess, read_amazon2018, read_ratings_csv, read_reviews
from slmrec.errors import DataError
from slmrec.stages import preprocess as stage

K = 3  # the smallest k-core the stage accepts; keeps the hand case small

# The hand case, one review per line, in file order: (reviewerID, asin, overall, unixReviewTime).
# - u4 reviews A, B and X. X has a single reviewer, so the first k-core pass drops it; that leaves u4 with
#   two reviews, below k, so only a second pass drops u4. A one-pass filter would keep u4.
# - (u1, A) appears twice: at t=50 early in the file and at t=10 later; the earliest (t=10) must win.
# - u1 reviews C and B at the same t=20, C first in the file: C must come before B (file order, not id order).
# - (u2, E) has rating 3 and is dropped (rating > 3 is kept); u3's C has rating 4 and is kept. Were it
#   dropped, u3 would fall below k and the case would collapse differently.
HAND = [
    ("u1", "A", 5.0, 50),
    ("u2", "A", 5.0, 11),
    ("u3", "A", 4.0, 12),
    ("u4", "A", 5.0, 13),
    ("u1", "C", 5.0, 20),
    ("u2", "B", 5.0, 21),
    ("u1", "B", 5.0, 20),
    ("u3", "B", 5.0, 22),
    ("u4", "B", 5.0, 23),
    ("u2", "C", 5.0, 31),
    ("u3", "C", 4.0, 32),
    ("u4", "X", 5.0, 33),
    ("u1", "A", 5.0, 10),
    ("u2", "E", 3.0, 40),
    ("u5", "A", 5.0, 15),
    ("u5", "B", 4.0, 25),
    ("u5", "D", 5.0, 35),
    ("u1", "D", 5.0, 5),
    ("u2", "D", 5.0, 41),
]
# After filtering: users u1, u2, u3, u5 -> 1, 2, 3, 4 and items A, B, C, D -> 1, 2, 3, 4 (sorted original ids).
# u1: D(5) A(10) C(20) B(20); u2: A B C D; u3: A B C; u5: A B D.
EXPECTED_SPLITS = {
    1: ([4, 1], 3, 2),
    2: ([1, 2], 3, 4),
    3: ([1], 2, 3),
    4: ([1], 2, 4),
}
EXPECTED_STATS = {
    "rows_read": 19,
    "bad_lines": 0,
    "after_rating_filter": 18,  # (u2, E, 3.0) dropped
    "after_dedup": 17,  # the later (u1, A) dropped
    "after_kcore": 14,  # (u4, X), then (u4, A) and (u4, B)
    "kcore_iterations": 3,  # drop X; drop u4; nothing left to drop
    "users": 4,
    "items": 4,
    "interactions": 14,
    "density": 14 / 16,
}
CFG = {"min_rating": 3, "kcore": K, "on_bad_line": "error"}
COLUMNS = ["item", "user", "rating", "timestamp"]  # the schema's default layout


def review(user: str, item: str, rating: float, time: int) -> str:
    return json.dumps(
        {"reviewerID": user, "asin": item, "overall": rating, "unixReviewTime": time, "reviewText": 'fine, "ok"'}
    )


def write_lines(path: Path, lines: list[str], gzipped: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


def hand_file(tmp_path: Path, name: str = "hand.json", rows=HAND, **kwargs) -> Path:
    return write_lines(tmp_path / name, [review(*row) for row in rows], **kwargs)


def splits_dict(splits: pl.DataFrame) -> dict[int, tuple[list[int], int, int]]:
    return {user: (train, valid, test) for user, train, valid, test in splits.iter_rows()}


def one_pass(frame: pl.DataFrame, k: int) -> pl.DataFrame:
    return frame.filter((pl.len().over("user_id") >= k) & (pl.len().over("item_id") >= k))


# --- k-core -------------------------------------------------------------------------------------------------


def test_kcore_is_iterative_where_one_pass_is_not_enough():
    pairs = [(u, i) for u in ("u1", "u2", "u3") for i in ("A", "B", "C")] + [("u4", "A"), ("u4", "B"), ("u4", "X")]
    frame = pl.DataFrame(pairs, schema=["user_id", "item_id"], orient="row")

    single = one_pass(frame, K)
    # One pass drops only (u4, X), and leaves u4 with two interactions: below k.
    assert single.height == frame.height - 1
    left = single.group_by("user_id").len().filter(pl.col("user_id") == "u4")["len"].to_list()
    assert left == [2]

    cored, iterations = kcore(frame, K)
    assert iterations > 1
    assert iterations == 3
    assert sorted(cored["user_id"].unique()) == ["u1", "u2", "u3"]
    assert sorted(cored["item_id"].unique()) == ["A", "B", "C"]
    assert cored.group_by("user_id").len()["len"].min() >= K
    assert cored.group_by("item_id").len()["len"].min() >= K


def test_kcore_chain_reaction_needs_several_passes():
    # A 2-core where each removal exposes the next: a path u0-i0-u1-i1-u2-i2 hanging off a dense block.
    dense = [(f"d{u}", f"D{i}") for u in range(3) for i in range(3)]
    chain = [("d0", "i0"), ("p1", "i0"), ("p1", "i1"), ("p2", "i1"), ("p2", "i2")]
    frame = pl.DataFrame(dense + chain, schema=["user_id", "item_id"], orient="row")
    cored, iterations = kcore(frame, 2)
    assert sorted(map(tuple, cored.select("user_id", "item_id").rows())) == sorted(dense)
    assert iterations >= 4
    assert one_pass(frame, 2).height > cored.height


def test_kcore_of_a_stable_frame_is_one_pass():
    frame = pl.DataFrame([(u, i) for u in "abc" for i in "xyz"], schema=["user_id", "item_id"], orient="row")
    cored, iterations = kcore(frame, 3)
    assert iterations == 1
    assert cored.height == 9


# --- the hand case through preprocess -------------------------------------------------------------------------


@pytest.fixture
def hand(tmp_path: Path):
    return preprocess(read_amazon2018(hand_file(tmp_path), "error"), 3, K)


def test_stats_on_the_hand_case(hand):
    assert set(EXPECTED_STATS) <= set(hand.stats)
    for key, value in EXPECTED_STATS.items():
        assert hand.stats[key] == pytest.approx(value), key


def test_kcore_in_preprocess_leaves_no_one_below_k(hand):
    counts_u = hand.interactions.group_by("user").len()["len"]
    counts_i = hand.interactions.group_by("item").len()["len"]
    assert counts_u.min() >= K and counts_i.min() >= K
    assert "u4" not in hand.users["user_id"].to_list()
    assert "X" not in hand.items["item_id"].to_list()


def test_rating_filter_keeps_above_min_rating_only(hand, tmp_path):
    assert "E" not in hand.items["item_id"].to_list()  # its only review had rating 3
    assert hand.interactions["rating"].min() == 4.0  # rating 4 kept
    assert sorted(hand.interactions["rating"].unique()) == [4.0, 5.0]
    # min_rating is configurable: with rating > 2 the rating-3 review survives the filter (k-core drops it later).
    lenient = preprocess(read_amazon2018(hand_file(tmp_path, "lenient.json"), "error"), 2, K)
    assert lenient.stats["after_rating_filter"] == len(HAND)
    assert lenient.stats["after_kcore"] == EXPECTED_STATS["after_kcore"]


def test_dedup_keeps_the_earliest_review(hand):
    u1 = hand.users.filter(pl.col("user_id") == "u1")["user"].item()
    a = hand.items.filter(pl.col("item_id") == "A")["item"].item()
    rows = hand.interactions.filter((pl.col("user") == u1) & (pl.col("item") == a))
    assert rows["timestamp"].to_list() == [10]
    assert hand.interactions.select("user", "item").is_duplicated().sum() == 0


def test_timestamp_ties_keep_file_order(hand):
    # u1 reviewed C (line 5) and B (line 7) both at t=20; C is first in the file, so C is valid and B is test.
    train, valid, test = splits_dict(hand.splits)[1]
    assert (valid, test) == (3, 2)
    u1 = hand.interactions.filter(pl.col("user") == 1)
    assert u1["item"].to_list() == [4, 1, 3, 2]
    assert u1["timestamp"].to_list() == [5, 10, 20, 20]


def test_timestamp_ties_follow_file_order_when_it_is_swapped(tmp_path):
    swapped = list(HAND)
    swapped[4], swapped[6] = swapped[6], swapped[4]  # now B (line 5) precedes C (line 7), same timestamp
    result = preprocess(read_amazon2018(hand_file(tmp_path, rows=swapped), "error"), 3, K)
    train, valid, test = splits_dict(result.splits)[1]
    assert (train, valid, test) == ([4, 1], 2, 3)


def test_leave_one_out_split(hand):
    assert hand.splits.columns == ["user", "train", "valid", "test"]
    assert splits_dict(hand.splits) == EXPECTED_SPLITS
    assert hand.splits["user"].to_list() == [1, 2, 3, 4]  # every user exactly once
    # train + valid + test is each user's whole history, oldest first.
    for user, train, valid, test in hand.splits.iter_rows():
        history = hand.interactions.filter(pl.col("user") == user)
        assert history["timestamp"].is_sorted()
        assert history["item"].to_list() == [*train, valid, test]


def test_ids_are_sorted_original_ids_from_one(hand):
    assert hand.users.columns == ["user", "user_id"] and hand.items.columns == ["item", "item_id"]
    assert hand.users.rows() == [(1, "u1"), (2, "u2"), (3, "u3"), (4, "u5")]
    assert hand.items.rows() == [(1, "A"), (2, "B"), (3, "C"), (4, "D")]
    assert hand.interactions.columns == ["user", "item", "timestamp", "rating"]
    assert hand.interactions["user"].min() == 1 and hand.interactions["item"].min() == 1


def test_ids_do_not_depend_on_line_order(tmp_path, hand):
    rows = list(HAND)
    random.Random(3).shuffle(rows)
    assert rows != HAND
    shuffled = preprocess(read_amazon2018(hand_file(tmp_path, "shuffled.json", rows=rows), "error"), 3, K)
    assert_frame_equal(shuffled.users, hand.users)
    assert_frame_equal(shuffled.items, hand.items)
    key = ["user", "item"]
    assert_frame_equal(shuffled.interactions.sort(key), hand.interactions.sort(key))
    # Users without timestamp ties get the very same split whatever the line order.
    assert {u: s for u, s in splits_dict(shuffled.splits).items() if u != 1} == {
        u: s for u, s in EXPECTED_SPLITS.items() if u != 1
    }
    assert shuffled.stats == hand.stats


def test_ids_are_contiguous_on_a_larger_shuffled_file(tmp_path):
    rng = random.Random(0)
    rows = [
        (f"user{u:03d}", f"item{rng.randrange(40):03d}", 5.0, rng.randrange(10**6)) for u in range(60) for _ in range(8)
    ]
    first = preprocess(read_amazon2018(hand_file(tmp_path, "big1.json", rows=rows), "error"), 3, K)
    rng.shuffle(rows)
    second = preprocess(read_amazon2018(hand_file(tmp_path, "big2.json", rows=rows), "error"), 3, K)
    for result in (first, second):
        assert result.users["user"].to_list() == list(range(1, result.users.height + 1))
        assert result.items["item"].to_list() == list(range(1, result.items.height + 1))
        assert result.users["user_id"].is_sorted() and result.items["item_id"].is_sorted()
    assert_frame_equal(first.users, second.users)
    assert_frame_equal(first.items, second.items)


# --- file formats --------------------------------------------------------------------------------------------


def test_gzipped_and_plain_files_with_blank_lines_read_the_same(tmp_path, hand):
    lines = [review(*row) for row in HAND]
    with_blanks = lines[:3] + ["", "   "] + lines[3:10] + [""] + lines[10:] + [""]
    plain = read_amazon2018(write_lines(tmp_path / "plain.json", with_blanks), "error")
    zipped = read_amazon2018(write_lines(tmp_path / "zipped.json.gz", with_blanks, gzipped=True), "error")
    assert plain.rows_read == zipped.rows_read == len(HAND)
    assert plain.bad_lines == zipped.bad_lines == 0
    assert_frame_equal(plain.frame, zipped.frame)
    # Line numbers count the blank lines: the 4th review sits on line 6.
    assert plain.frame["line"].to_list()[:5] == [1, 2, 3, 6, 7]
    for reviews in (plain, zipped):
        result = preprocess(reviews, 3, K)
        assert_frame_equal(result.interactions, hand.interactions)
        assert_frame_equal(result.splits, hand.splits)


def test_file_without_trailing_newline(tmp_path):
    path = tmp_path / "no_newline.json"
    path.write_text("\n".join(review(*row) for row in HAND[:3]))
    reviews = read_amazon2018(path, "error")
    assert reviews.rows_read == 3
    assert reviews.frame["item_id"].to_list() == ["A", "A", "A"]


def test_read_amazon2018_values(tmp_path):
    reviews = read_amazon2018(hand_file(tmp_path), "error")
    assert reviews.frame.columns == ["line", "user_id", "item_id", "rating", "timestamp"]
    assert reviews.frame.row(0) == (1, "u1", "A", 5.0, 50)
    assert reviews.frame.row(13) == (14, "u2", "E", 3.0, 40)


CSV_HAND = "".join(f"{item},{user},{rating},{time}\n" for user, item, rating, time in HAND)


def test_ratings_csv_default_layout(tmp_path, hand):
    path = tmp_path / "ratings.csv"
    path.write_text(CSV_HAND)
    reviews = read_ratings_csv(path, COLUMNS, False, "error")
    assert reviews.rows_read == len(HAND)
    assert reviews.frame.row(0) == (1, "u1", "A", 5.0, 50)
    result = preprocess(reviews, 3, K)
    assert result.stats == hand.stats
    assert_frame_equal(result.splits, hand.splits)
    assert_frame_equal(result.users, hand.users)


def test_ratings_csv_custom_columns_with_header(tmp_path, hand):
    path = tmp_path / "custom.csv"
    body = "".join(f"{time},{user},{rating},{item}\n" for user, item, rating, time in HAND)
    path.write_text("timestamp,user,rating,item\n" + body)
    reviews = read_ratings_csv(path, ["timestamp", "user", "rating", "item"], True, "error")
    assert reviews.rows_read == len(HAND)
    assert reviews.frame.row(0) == (2, "u1", "A", 5.0, 50)  # line 1 is the header
    assert_frame_equal(preprocess(reviews, 3, K).splits, hand.splits)


def test_ratings_csv_header_in_another_order_is_read_by_name(tmp_path, hand):
    # The configured order is item,user,...; the header says user comes first, and it does.
    path = tmp_path / "swapped.csv"
    body = "".join(f"{user},{item},{rating},{time}\n" for user, item, rating, time in HAND)
    path.write_text("User, Item ,rating,timestamp\n" + body)
    reviews = read_ratings_csv(path, COLUMNS, True, "error")
    assert reviews.frame.row(0) == (2, "u1", "A", 5.0, 50)
    assert_frame_equal(preprocess(reviews, 3, K).splits, hand.splits)


def test_ratings_csv_bad_rating_names_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("A,u1,5.0,10\nB,u1,4.0,11\nC,u1,great,12\nD,u1,5.0,13\n")
    with pytest.raises(DataError) as err:
        read_ratings_csv(path, COLUMNS, False, "error")
    message = str(err.value)
    assert str(path) in message and "line 3" in message and "rating" in message and "great" in message
    skipped = read_ratings_csv(path, COLUMNS, False, "skip")
    assert (skipped.rows_read, skipped.bad_lines, skipped.frame.height) == (4, 1, 3)
    assert skipped.frame["line"].to_list() == [1, 2, 4]


def test_ratings_csv_bad_line_number_counts_the_header(tmp_path):
    path = tmp_path / "bad_header.csv"
    path.write_text("item,user,rating,timestamp\nA,u1,5.0,10\nB,u1,4.0,soon\n")
    with pytest.raises(DataError, match=r"line 3\b.*timestamp"):
        read_ratings_csv(path, COLUMNS, True, "error")


def test_ratings_csv_ignores_a_trailing_blank_line(tmp_path):
    path = tmp_path / "trailing.csv"
    path.write_text("A,u1,5.0,10\nB,u1,4.0,11\n\n")
    assert read_ratings_csv(path, COLUMNS, False, "error").frame.height == 2


def test_ratings_csv_error_does_not_mention_json_fields(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("A,u1,great,10\n")
    with pytest.raises(DataError) as err:
        read_ratings_csv(path, COLUMNS, False, "error")
    assert "reviewerID" not in str(err.value)


# --- bad input ------------------------------------------------------------------------------------------------

BAD_LINES = {
    "malformed": ('{"reviewerID": "u9", "asin": "Z", "overall": 5.0, ', "malformed JSON"),
    "missing_asin": ('{"reviewerID": "u9", "overall": 5.0, "unixReviewTime": 7}', "'asin'"),
    "missing_time": ('{"reviewerID": "u9", "asin": "Z", "overall": 5.0}', "'unixReviewTime'"),
    "text_rating": ('{"reviewerID": "u9", "asin": "Z", "overall": "five", "unixReviewTime": 7}', "'overall'"),
    "null_rating": ('{"reviewerID": "u9", "asin": "Z", "overall": null, "unixReviewTime": 7}', "'overall'"),
    "not_object": ("[1, 2, 3]", "JSON object"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_line_error_names_file_line_and_field(tmp_path, kind):
    bad, fragment = BAD_LINES[kind]
    lines = [review(*row) for row in HAND]
    lines = lines[:4] + [""] + [bad] + lines[4:]  # the bad line is line 6 (a blank line 5 counts)
    path = write_lines(tmp_path / "bad.json", lines)
    with pytest.raises(DataError) as err:
        read_amazon2018(path, "error")
    message = str(err.value)
    assert str(path) in message
    assert "line 6:" in message
    assert fragment in message


@pytest.mark.parametrize("gzipped", [False, True])
def test_skip_counts_bad_lines(tmp_path, gzipped, hand):
    lines = [review(*row) for row in HAND]
    bads = [bad for bad, _ in BAD_LINES.values()]
    mixed = lines[:2] + bads[:3] + lines[2:12] + bads[3:] + lines[12:]
    path = write_lines(tmp_path / "mixed.json", mixed, gzipped=gzipped)
    reviews = read_amazon2018(path, on_bad_line="skip")
    assert reviews.bad_lines == len(bads)
    assert reviews.rows_read == len(HAND) + len(bads)
    result = preprocess(reviews, 3, K)
    assert result.stats["bad_lines"] == len(bads)
    assert result.stats["rows_read"] == len(HAND) + len(bads)
    assert result.stats["after_rating_filter"] == EXPECTED_STATS["after_rating_filter"]
    assert_frame_equal(result.splits, hand.splits)


def test_empty_after_rating_filter_names_the_filter_and_count(tmp_path):
    rows = [(f"u{u}", f"i{i}", 3.0, u * 10 + i) for u in range(4) for i in range(4)]
    reviews = read_amazon2018(hand_file(tmp_path, rows=rows), "error")
    with pytest.raises(DataError) as err:
        preprocess(reviews, 3, K)
    message = str(err.value)
    assert "rating filter" in message and "rating > 3" in message
    assert "16 before" in message


def test_empty_after_kcore_names_the_filter_and_count(tmp_path):
    rows = [("u1", "A", 5.0, 1), ("u1", "B", 5.0, 2), ("u2", "A", 5.0, 3), ("u2", "A", 5.0, 4), ("u3", "C", 1.0, 5)]
    reviews = read_amazon2018(hand_file(tmp_path, rows=rows), "error")
    with pytest.raises(DataError) as err:
        preprocess(reviews, 3, K)
    message = str(err.value)
    assert "3-core" in message
    assert "3 before" in message  # 5 read, 4 after the rating filter, 3 after de-duplication


def test_empty_file_is_an_error(tmp_path):
    path = write_lines(tmp_path / "empty.json", ["", ""])
    with pytest.raises(DataError, match="no valid reviews"):
        preprocess(read_amazon2018(path, "error"), 3, K)


def test_kcore_below_three_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 3"):
        preprocess(read_amazon2018(hand_file(tmp_path), "error"), 3, 2)


# --- the rule entry point -------------------------------------------------------------------------------------


def outputs(folder: Path) -> SimpleNamespace:
    return SimpleNamespace(
        interactions=str(folder / "interactions.parquet"),
        user_ids=str(folder / "users.parquet"),
        item_ids=str(folder / "items.parquet"),
        splits=str(folder / "splits.parquet"),
        stats=str(folder / "stats.json"),
        manifest=str(folder / "manifest.json"),
    )


def run(raw: str, source: dict, cfg: dict, out: SimpleNamespace):
    """The `preprocess` stage as its rule calls it."""
    return stage.run(stage_call("preprocess", {"raw": raw}, out, {"preprocess": cfg, "source": source}))


def test_run_writes_every_artifact_and_a_manifest(tmp_path):
    raw = hand_file(tmp_path, "hand.json.gz", gzipped=True)
    source = {"kind": "amazon2018"}
    out = outputs(tmp_path / "data")
    run(str(raw), source, CFG, out)

    stats = json.loads(Path(out.stats).read_text())
    for key, value in EXPECTED_STATS.items():
        assert stats[key] == pytest.approx(value), key
    splits = pl.read_parquet(out.splits)
    assert splits_dict(splits) == EXPECTED_SPLITS
    assert pl.read_parquet(out.user_ids).rows() == [(1, "u1"), (2, "u2"), (3, "u3"), (4, "u5")]
    assert pl.read_parquet(out.item_ids).rows() == [(1, "A"), (2, "B"), (3, "C"), (4, "D")]
    interactions = pl.read_parquet(out.interactions)
    assert interactions.columns == ["user", "item", "timestamp", "rating"]
    assert interactions.height == 14

    manifest = json.loads(Path(out.manifest).read_text())
    assert manifest["stage"] == "preprocess"
    assert manifest["config"] == {"preprocess": CFG, "source": source}
    assert manifest["inputs"] == {str(raw): hashlib.sha256(raw.read_bytes()).hexdigest()}
    for name in ("interactions", "user_ids", "item_ids", "splits", "stats"):
        path = getattr(out, name)
        assert manifest["outputs"][path] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(
        ["interactions.parquet", "users.parquet", "items.parquet", "splits.parquet", "stats.json", "manifest.json"]
    )


def test_run_is_deterministic(tmp_path):
    raw = hand_file(tmp_path)
    first, second = outputs(tmp_path / "one"), outputs(tmp_path / "two")
    run(str(raw), {"kind": "amazon2018"}, CFG, first)
    run(str(raw), {"kind": "amazon2018"}, CFG, second)
    for name in ("interactions", "user_ids", "item_ids", "splits"):
        assert_frame_equal(pl.read_parquet(getattr(first, name)), pl.read_parquet(getattr(second, name)))
    assert Path(first.stats).read_text() == Path(second.stats).read_text()


def test_run_reads_a_ratings_csv_source(tmp_path):
    raw = tmp_path / "ratings.csv"
    raw.write_text("item,user,rating,timestamp\n" + CSV_HAND)
    source = {"kind": "ratings_csv", "columns": ["item", "user", "rating", "timestamp"], "header": True}
    result = run(str(raw), source, CFG, outputs(tmp_path / "data"))
    assert splits_dict(result.splits) == EXPECTED_SPLITS


def test_run_failure_leaves_no_artifact(tmp_path):
    raw = write_lines(tmp_path / "bad.json", [review(*HAND[0]), "{oops"])
    out = outputs(tmp_path / "data")
    with pytest.raises(DataError, match="line 2"):
        run(str(raw), {"kind": "amazon2018"}, CFG, out)
    assert not any(Path(getattr(out, name)).exists() for name in vars(out))


# --- bad input that names the file and the line, and writes nothing ----------------------------------------


def csv_source(header: bool) -> dict:
    return {"kind": "ratings_csv", "columns": COLUMNS, "header": header}


def run_fails(raw: Path, source: dict, tmp_path: Path, cfg: dict = CFG) -> str:
    """Run the stage on bad input: it must fail with a DataError and leave no artifact; return the message."""
    out = outputs(tmp_path / "data")
    with pytest.raises(DataError) as err:
        run(str(raw), source, cfg, out)
    assert not any(Path(getattr(out, name)).exists() for name in vars(out))
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []
    return str(err.value)


def test_ratings_csv_header_naming_no_column_is_an_error(tmp_path):
    raw = tmp_path / "no_header.csv"
    raw.write_text(CSV_HAND)  # header: true, but the first line is a review
    message = run_fails(raw, csv_source(True), tmp_path)
    assert f"{raw}, line 1:" in message
    assert "names none of the columns item, user, rating, timestamp" in message and "header: false" in message


def test_ratings_csv_header_read_as_data_hints_header_true(tmp_path):
    raw = tmp_path / "with_header.csv"
    raw.write_text("item,user,rating,timestamp\n" + CSV_HAND)
    message = run_fails(raw, csv_source(False), tmp_path)
    assert message.startswith(f"{raw}, line 1: column 'rating' is not a number: 'rating'.")
    hint = (
        "line 1 looks like a header: set source.header: true; a header names the columns item, user, rating, timestamp"
    )
    assert message.endswith(f"({hint})")
    assert "on_bad_line" not in message
    # The advice is right: with it, the file reads as the same reviews without the header line.
    (tmp_path / "plain.csv").write_text(CSV_HAND)
    plain = read_ratings_csv(tmp_path / "plain.csv", COLUMNS, False, "error").frame
    assert read_ratings_csv(raw, COLUMNS, True, "error").frame.drop("line").rows() == plain.drop("line").rows()


def test_ratings_csv_bad_first_row_is_not_taken_for_a_header(tmp_path):
    raw = tmp_path / "bad_first.csv"
    raw.write_text("A,u1,five,10\n" + CSV_HAND)
    message = run_fails(raw, csv_source(False), tmp_path)
    assert "line 1: column 'rating' is not a number: 'five'" in message
    assert "header" not in message and "set preprocess.on_bad_line: skip" in message


def test_ratings_csv_header_contradicting_columns_is_an_error(tmp_path):
    raw = tmp_path / "stars.csv"
    raw.write_text("item,user,stars,timestamp\n" + CSV_HAND)
    message = run_fails(raw, csv_source(True), tmp_path)
    assert f"{raw}, line 1: the header (item, user, stars, timestamp) contradicts source.columns" in message
    assert "no column 'rating'" in message and "unknown column 'stars'" in message


def test_ratings_csv_row_with_too_many_columns_names_the_line_and_skip_skips_it(tmp_path, hand):
    lines = CSV_HAND.splitlines()
    raw = tmp_path / "ragged.csv"
    raw.write_text("\n".join(["item,user,rating,timestamp", *lines[:5], "Z,u9,5.0,77,extra", *lines[5:]]) + "\n")
    message = run_fails(raw, csv_source(True), tmp_path)
    assert f"{raw}, line 7: 5 fields, not 4" in message
    skipped = read_ratings_csv(raw, COLUMNS, True, "skip")
    assert (skipped.rows_read, skipped.bad_lines) == (len(HAND) + 1, 1)
    assert 7 not in skipped.frame["line"].to_list() and skipped.frame["line"].to_list()[5] == 8
    result = preprocess(skipped, 3, K)
    assert result.stats["bad_lines"] == 1
    assert_frame_equal(result.splits, hand.splits)


def test_truncated_json_gz_names_the_file_and_the_records_before_the_cut(tmp_path):
    lines = [review(f"u{i % 50}", f"i{i % 40}", 5.0, i) + " " * (i % 7) for i in range(5000)]
    whole = gzip.compress(("\n".join(lines) + "\n").encode())
    raw = tmp_path / "cut.json.gz"
    raw.write_bytes(whole[: len(whole) // 2])
    message = run_fails(raw, {"kind": "amazon2018"}, tmp_path)
    assert f"{raw}, line " in message and "the gzip stream ends early" in message
    records = int(message.split("after ")[1].split(" complete records")[0])
    assert 0 < records < len(lines)
    assert f"line {records + 1}:" in message  # the line that was cut
    # Exactly the whole lines a lenient reader gets out of the cut file.
    with gzip.open(raw, "rb") as handle:
        got = b""
        try:
            while chunk := handle.read1(1 << 16):
                got += chunk
        except EOFError:
            pass
    assert records == got.count(b"\n")


def test_a_stray_byte_in_a_field_we_never_read_is_harmless(tmp_path, hand):
    lines = [review(*row).encode() for row in HAND]
    lines[3] = lines[3].replace(b'"fine, ', b'"caf\xe9 ')  # Latin-1 in reviewText
    raw = tmp_path / "latin1.json.gz"
    raw.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    reviews = read_amazon2018(raw, "error")
    assert (reviews.rows_read, reviews.bad_lines) == (len(HAND), 0)
    result = preprocess(reviews, 3, K)
    assert_frame_equal(result.splits, hand.splits)
    assert_frame_equal(result.users, hand.users)


def test_a_stray_byte_in_a_field_we_read_is_a_bad_line(tmp_path, hand):
    lines = [review(*row).encode() for row in HAND]
    extra = review("u9", "Z", 5.0, 99).encode().replace(b'"u9"', b'"u\xff9"')
    raw = tmp_path / "bad_id.json"
    raw.write_bytes(b"\n".join([*lines[:6], extra, *lines[6:]]) + b"\n")
    message = run_fails(raw, {"kind": "amazon2018"}, tmp_path)
    assert f"{raw}, line 7: field 'reviewerID' is not valid UTF-8" in message
    skipped = read_amazon2018(raw, "skip")
    assert (skipped.rows_read, skipped.bad_lines) == (len(HAND) + 1, 1)
    assert "u\ufffd9" not in skipped.frame["user_id"].to_list()
    assert_frame_equal(preprocess(skipped, 3, K).splits, hand.splits)


def test_a_stray_byte_in_a_csv_id_is_a_bad_line(tmp_path):
    raw = tmp_path / "bad_id.csv"
    raw.write_bytes(CSV_HAND.encode() + b"Z,u\xff9,5.0,99\n")
    message = run_fails(raw, csv_source(False), tmp_path)
    assert f"{raw}, line {len(HAND) + 1}: column 'user' is not valid UTF-8" in message
    skipped = read_ratings_csv(raw, COLUMNS, False, "skip")
    assert (skipped.rows_read, skipped.bad_lines) == (len(HAND) + 1, 1)


# --- numbers that are no rating or timestamp; lines of whitespace ------------------------------------------

JSON_EXPECTED = "a JSON object with reviewerID, asin, overall, unixReviewTime in UTF-8, rating and timestamp numeric"
CSV_EXPECTED = "4 comma-separated columns (item, user, rating, timestamp), rating and timestamp numeric"
SKIP_HINT = "(set preprocess.on_bad_line: skip to drop such lines)"
TIMESTAMP_RANGE = "(a timestamp must lie within the 64-bit integer range, -9223372036854775808 to 9223372036854775807)"


def json_review(overall: str, time: str) -> str:
    """A review line with `overall` and `unixReviewTime` written exactly as given (NaN, 1e400: not what json.dumps
    writes)."""
    return f'{{"reviewerID": "u9", "asin": "Z", "overall": {overall}, "unixReviewTime": {time}}}'


BAD_NUMBERS = {  # id: (source kind, the bad line, why it is bad)
    "csv-nan": ("ratings_csv", "Z,u9,nan,99", "column 'rating' is not a finite number: 'nan'"),
    "csv-inf": ("ratings_csv", "Z,u9,inf,99", "column 'rating' is not a finite number: 'inf'"),
    "csv-minus-inf": ("ratings_csv", "Z,u9,-inf,99", "column 'rating' is not a finite number: '-inf'"),
    "csv-nan-timestamp": ("ratings_csv", "Z,u9,5.0,NaN", "column 'timestamp' is not a finite number: 'NaN'"),
    "csv-timestamp-1e30": (
        "ratings_csv",
        "Z,u9,5.0,1e30",
        f"column 'timestamp' is out of range: '1e30' {TIMESTAMP_RANGE}",
    ),
    "csv-timestamp-2**63": (
        "ratings_csv",
        "Z,u9,5.0,9223372036854775808",
        f"column 'timestamp' is out of range: '9223372036854775808' {TIMESTAMP_RANGE}",
    ),
    "json-nan": ("amazon2018", json_review("NaN", "99"), "field 'overall' is not a finite number: 'NaN'"),
    "json-nan-string": ("amazon2018", json_review('"nan"', "99"), "field 'overall' is not a finite number: 'nan'"),
    "json-infinity": (
        "amazon2018",
        json_review("Infinity", "99"),
        "field 'overall' is not a finite number: 'Infinity'",
    ),
    "json-1e400": (
        "amazon2018",
        json_review("1e400", "99"),
        "field 'overall' is out of range: '1e400' (a rating must be a 64-bit float, at most 1.79769e+308 in size)",
    ),
    "json-nan-timestamp": (
        "amazon2018",
        json_review("5.0", "NaN"),
        "field 'unixReviewTime' is not a finite number: 'NaN'",
    ),
    "json-timestamp-1e30": (
        "amazon2018",
        json_review("5.0", "1e30"),
        f"field 'unixReviewTime' is out of range: '1e30' {TIMESTAMP_RANGE}",
    ),
}


@pytest.mark.parametrize("case", list(BAD_NUMBERS))
def test_a_rating_or_timestamp_not_finite_or_out_of_range_is_a_bad_line(tmp_path, hand, case):
    """NaN sorts above every number: read as a rating, it would pass the rating filter and become an interaction."""
    kind, bad, reason = BAD_NUMBERS[case]
    if kind == "ratings_csv":
        source, expected, lines = csv_source(False), CSV_EXPECTED, CSV_HAND.splitlines()
    else:
        source, expected, lines = {"kind": "amazon2018"}, JSON_EXPECTED, [review(*row) for row in HAND]
    raw = tmp_path / ("ratings.csv" if kind == "ratings_csv" else "reviews.json")
    raw.write_text("\n".join([*lines[:6], bad, *lines[6:]]) + "\n")
    assert run_fails(raw, source, tmp_path) == f"{raw}, line 7: {reason}. Expected {expected} {SKIP_HINT}"
    skipped = read_reviews(raw, source, "skip")
    assert (skipped.rows_read, skipped.bad_lines) == (len(HAND) + 1, 1)
    assert 7 not in skipped.frame["line"].to_list() and skipped.frame["rating"].is_finite().all()
    result = preprocess(skipped, 3, K)
    assert result.stats["bad_lines"] == 1
    assert_frame_equal(result.splits, hand.splits)


def test_a_huge_finite_rating_is_read_as_it_is(tmp_path):
    """Ratings have no range check (scales differ between sources): 1e9 is a rating like 5, and passes the filter."""
    raw = tmp_path / "ratings.csv"
    raw.write_text(CSV_HAND + "Z,u1,1e9,99\n")
    reviews = read_ratings_csv(raw, COLUMNS, False, "error")
    assert (reviews.bad_lines, reviews.frame.row(-1)) == (0, (len(HAND) + 1, "u1", "Z", 1e9, 99))


@pytest.mark.parametrize("reader", ["polars", "csv-module"])
def test_ratings_csv_lines_of_whitespace_only_are_skipped(tmp_path, hand, reader):
    """As blank lines are, in both readers; a row polars refuses (too many fields) makes the csv module read it."""
    extra = ["Z,u9,5.0,77,extra"] if reader == "csv-module" else []
    lines = CSV_HAND.splitlines()
    raw = tmp_path / "spaced.csv"
    raw.write_text("\n".join([*lines[:3], "   ", "\t", *lines[3:], " \t ", *extra]) + "\n")
    reviews = read_ratings_csv(raw, COLUMNS, False, "skip")
    assert (reviews.rows_read, reviews.bad_lines) == (len(HAND) + len(extra), len(extra))
    assert reviews.frame["line"].to_list()[2:4] == [3, 6]
    assert_frame_equal(preprocess(reviews, 3, K).splits, hand.splits)
