"""Raw reviews to leave-one-out splits: rating filter, de-duplication, iterative k-core, ids, splits.

Speed matters here (a 10-million-review file should take seconds, not minutes), so no review ever
becomes a Python object: the raw file goes straight into polars, ids become integer codes right after
the rating filter, and de-duplication, k-core and the final ordering all work on those integers.
Every output is a parquet file whose columns are the contract later stages rely on (see README,
"Artifacts").
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from slmrec.errors import DataError

logger = logging.getLogger(__name__)

AMAZON_FIELDS = {"user_id": "reviewerID", "item_id": "asin", "rating": "overall", "timestamp": "unixReviewTime"}
RAW_SCHEMA = {"user_id": pl.String, "item_id": pl.String, "rating": pl.Float64, "timestamp": pl.Int64}
JSON_SCHEMA = {key: RAW_SCHEMA[column] for column, key in AMAZON_FIELDS.items()}
BLOCK_BYTES = 64 << 20
CSV_NAMES = {"item": "item_id", "user": "user_id", "rating": "rating", "timestamp": "timestamp"}
CSV_CHUNK_ROWS = 1 << 20
TIMESTAMP_RANGE = (-(2**63), 2**63 - 1)  # what RAW_SCHEMA's Int64 timestamp holds
RATING_MAX = sys.float_info.max  # the largest finite Float64 rating; a larger number reads as inf


@dataclass
class Reviews:
    """Parsed reviews in file order; `line` is the 1-based line number, which also breaks timestamp ties."""

    frame: pl.DataFrame
    rows_read: int
    bad_lines: int = 0


@dataclass
class Preprocessed:
    interactions: pl.DataFrame
    users: pl.DataFrame
    items: pl.DataFrame
    splits: pl.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)


def _open_binary(path: Path, member: str | None = None) -> io.BufferedIOBase:
    """The file's bytes, gunzipped if it is a gzip file, or those of one `member` of a zip archive."""
    if member is not None:
        with zipfile.ZipFile(path) as archive:  # the member keeps the file open until it is closed
            return cast(io.BufferedIOBase, archive.open(member))  # a ZipExtFile
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _where(path: Path, member: str | None) -> str:
    """How messages name a file, or a member of a zip archive."""
    return f"{path}, member {member}" if member else str(path)


class _Cut(Exception):
    """The compressed stream ended early or is damaged; the lines before the cut have been yielded."""


def _read_block(handle: io.BufferedIOBase, size: int) -> tuple[bytes, BaseException | None]:
    """Up to `size` bytes, and the error that cut the stream short, if any, with the bytes before it.

    Reads go through `read1`, so that a damaged gzip stream loses nothing decompressed before the damage.
    """
    parts: list[bytes] = []
    got = 0
    try:
        while got < size and (chunk := handle.read1(size - got)):
            parts.append(chunk)
            got += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile) as err:
        return b"".join(parts), err
    return b"".join(parts), None


def _line_blocks(path: Path, member: str | None = None) -> Iterator[bytes]:
    """Blocks of whole lines, so that a line is never split across two polars frames.

    A gzip stream or zip member that ends early or is damaged raises `_Cut` after the whole lines
    before the damage. Progress counts bytes on disk, or a zip member's uncompressed bytes.
    """
    if member is None:
        total = path.stat().st_size
    else:
        with zipfile.ZipFile(path) as archive:
            total = archive.getinfo(member).file_size
    with (
        _open_binary(path, member) as handle,
        tqdm(total=total, unit="B", unit_scale=True, desc=f"reading {path.name}", mininterval=2) as bar,
    ):
        on_disk = cast(io.IOBase, handle.fileobj if isinstance(handle, gzip.GzipFile) else handle)
        carry = b""
        while True:
            block, cut_by = _read_block(handle, BLOCK_BYTES)
            if not block and cut_by is None:
                break
            block = carry + block
            cut = block.rfind(b"\n") + 1
            carry = block[cut:]
            bar.update(on_disk.tell() - bar.n)
            if cut:
                yield block[:cut]
            if cut_by is not None:
                raise _Cut(_describe_cut(cut_by, "the zip member" if member else "the gzip stream"))
        if carry:
            yield carry + b"\n"


def _describe_cut(err: BaseException, stream: str) -> str:
    if isinstance(err, EOFError):
        return f"{stream} ends early"
    return f"{stream} is damaged ({err})"


def _invalid_utf8_lines(block: bytes) -> list[int]:
    """0-based indices of the lines of `block` that are not valid UTF-8 (slow; only for blocks that have some)."""
    invalid = []
    for index, line in enumerate(block.split(b"\n")):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            invalid.append(index)
    return invalid


def _block_lines(block: bytes) -> pl.DataFrame:
    """One row per line of `block` (blank lines are null), text in column `text`.

    Lines that are not valid UTF-8 are decoded with U+FFFD for each bad byte and flagged in
    `invalid_utf8`; whether that matters depends on the field the bad bytes are in. A clean block
    takes the strict decoder only.
    """

    def read(encoding: str) -> pl.DataFrame:
        return pl.read_csv(
            io.BytesIO(block),
            has_header=False,
            separator="\x1f",
            quote_char=None,
            new_columns=["text"],
            schema={"text": pl.String},
            encoding=encoding,
        )

    try:
        return read("utf8").with_columns(invalid_utf8=pl.lit(False))
    except pl.exceptions.ComputeError:
        invalid = _invalid_utf8_lines(block)
        if not invalid:
            raise
    lines = read("utf8-lossy")
    flags = np.zeros(lines.height, dtype=bool)
    flags[[i for i in invalid if i < lines.height]] = True
    return lines.with_columns(invalid_utf8=pl.Series(flags))


def _parse(column: str, text: pl.Expr) -> pl.Expr:
    """Column `column` of RAW_SCHEMA read from `text`, null where the text holds no valid value (a bad line).

    A rating must be a finite number: polars reads 'nan' and 'inf' as floats, and NaN sorts above every
    number, so it would pass the rating filter and become an interaction. Any finite rating is accepted:
    there is no range check, as scales differ between sources (1 to 5 stars, half stars, an implicit 5),
    so a rating of 1e9 is read as it is and passes any preprocess.min_rating below it. A timestamp is an
    integer, read exactly (beyond a float's 53 bits), or a finite number within TIMESTAMP_RANGE, whose
    fraction is dropped.
    """
    if column == "rating":
        rating = text.cast(pl.Float64, strict=False)
        return pl.when(rating.is_finite()).then(rating)
    if column == "timestamp":
        as_float = text.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)  # null unless finite, in range
        return pl.coalesce(text.cast(pl.Int64, strict=False), as_float)
    return text.cast(RAW_SCHEMA[column])


def _number_problem(column: str, text: str) -> str:
    """Why `_parse` refused `text` as the rating or timestamp `column`: the end of a bad-line message."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return f"is not a number: {text!r}"
    if not value.is_finite():
        return f"is not a finite number: {text!r}"
    if column == "rating" and abs(value) > RATING_MAX:
        return f"is out of range: {text!r} (a rating must be a 64-bit float, at most {RATING_MAX:g} in size)"
    low, high = TIMESTAMP_RANGE
    if column == "timestamp" and not low <= value <= high:
        return f"is out of range: {text!r} (a timestamp must lie within the 64-bit integer range, {low} to {high})"
    return f"is not a number: {text!r}"  # text Python reads as a number and polars does not, such as ' 12'


def _explain_bad_json_line(text: str, invalid_utf8: bool) -> str:
    try:  # numbers as written, so that a message quotes 1e400 or NaN as the file has them
        record = json.loads(text, parse_float=str, parse_constant=str)
    except json.JSONDecodeError as err:
        return f"malformed JSON ({err.msg} at column {err.colno})"
    if not isinstance(record, dict):
        return "expected a JSON object"
    for key in AMAZON_FIELDS.values():
        if invalid_utf8 and "\ufffd" in str(record.get(key)):
            return f"field {key!r} is not valid UTF-8"
    for column, key in AMAZON_FIELDS.items():
        if record.get(key) is None:
            return f"missing field {key!r}"
        # Read again on its own: polars gives up on the whole of a line it cannot parse (a bare NaN).
        if column in ("rating", "timestamp") and pl.select(_parse(column, pl.lit(str(record[key])))).item() is None:
            return f"field {key!r} {_number_problem(column, str(record[key]))}"
    return "unreadable record"


def _handle_bad_rows(
    parsed: pl.DataFrame,
    where: str | Path,
    on_bad_line: str,
    explain: Callable[[dict[str, Any]], str],
    expected: str,
    advise: Callable[[dict[str, Any]], str | None] = lambda row: None,
) -> tuple[pl.DataFrame, int]:
    """Fail on the first bad row with a precise message, or drop and count bad rows; `where` names the file.

    The message ends with `advise(row)` where that knows a better fix than skipping such lines.
    """
    bad = parsed.filter(pl.any_horizontal(pl.col(list(RAW_SCHEMA)).is_null()))
    if bad.height == 0:
        return parsed, 0
    if on_bad_line == "skip":
        return parsed.filter(pl.all_horizontal(pl.col(list(RAW_SCHEMA)).is_not_null())), bad.height
    first = bad.row(0, named=True)
    raise DataError(
        f"{where}, line {first['line']}: {explain(first)}. Expected {expected} "
        f"({advise(first) or 'set preprocess.on_bad_line: skip to drop such lines'})"
    )


def read_amazon2018(path: str | os.PathLike, on_bad_line: str) -> Reviews:
    """Read Amazon 2018 review JSON lines (gzipped or not), keeping only the four fields we need.

    A clean file takes the fast, strict reader; a file it refuses goes through the block parser,
    which finds the bad lines and names them (or skips them).
    """
    path = Path(path)
    reviews = _read_json_lines_fast(path)
    return reviews if reviews is not None else _read_json_lines_in_blocks(path, on_bad_line)


def _cut_short(where: str, reason: str, records: int, line: int) -> DataError:
    return DataError(
        f"{where}, line {line}: {reason}, after {records} complete records; the file is incomplete or "
        "damaged: fetch it again"
    )


def _read_json_lines_fast(path: Path) -> Reviews | None:
    """polars' own typed NDJSON reader (parallel, gzip-aware, ~8x faster than the block parser), or None.

    It is strict where the block parser is lenient (a rating or timestamp given as a JSON string, a
    fractional timestamp) and fails on any malformed line, so it returns None (read the file with
    the block parser) whenever it fails or leaves a field empty. What it accepts, it reads as the
    block parser would, except ids that are not JSON strings (written out slightly differently) and
    a key repeated within a record (first value rather than last). It skips blank lines, so line
    numbers come from a second scan, of the raw lines, run alongside. polars expands glob patterns
    in the NDJSON path, so a name with glob characters goes to the block parser, and so does a file it
    cannot read at all (a gzip stream that ends early raises OSError; bytes that are not UTF-8 a
    ComputeError): the block parser tells which line.
    """
    if any(char in str(path) for char in "*?["):
        return None
    records = pl.scan_ndjson(path, schema=JSON_SCHEMA)
    lines = (
        pl.scan_lines(path, name="text", row_index_name="line", row_index_offset=1, glob=False)
        .filter(pl.col("text").str.strip_chars() != "")
        .select("line")
    )
    try:
        frame, numbered = pl.collect_all([records, lines])
    except (pl.exceptions.PolarsError, OSError) as err:
        logger.info("%s: the fast JSON reader gave up (%s); reading it in blocks", path, str(err).split("\n")[0])
        return None
    # polars' reader refuses NaN and 1e400 today; should it ever read them, the block parser names the line.
    if (
        frame.height != numbered.height
        or frame.null_count().sum_horizontal().item() > 0
        or not frame["overall"].is_finite().all()
    ):
        logger.info("%s: some lines lack a field or hold no finite rating; reading it in blocks", path)
        return None
    frame = frame.select(
        numbered["line"].cast(pl.Int64), *[pl.col(key).alias(col) for col, key in AMAZON_FIELDS.items()]
    )
    return Reviews(frame, frame.height)


def _numbered_lines(path: Path, member: str | None) -> Iterator[pl.DataFrame]:
    """The non-blank lines of a file (or zip member), a block at a time: `line` (1-based), `text`, `invalid_utf8`.

    A compressed stream cut short raises a DataError naming the line of the cut and the lines before it.
    """
    rows, first_line = 0, 1
    blocks = _line_blocks(path, member)
    while True:
        try:
            block = next(blocks)
        except StopIteration:
            return
        except _Cut as cut:
            raise _cut_short(_where(path, member), str(cut), rows, first_line) from cut
        lines = _block_lines(block)
        numbered = lines.with_row_index("line", offset=first_line).filter(
            pl.col("text").is_not_null() & (pl.col("text").str.strip_chars() != "")
        )
        first_line += lines.height
        rows += numbered.height
        yield numbered


def _read_json_lines_in_blocks(path: Path, on_bad_line: str) -> Reviews:
    """Blocks of lines, each field picked out by its JSON path; slow, but it knows which line is bad.

    Bytes that are not UTF-8 spoil only the field they are in: in a field we never read (say
    `reviewText`) they do no harm, in one of ours the line is bad like any other.
    """
    frames, rows_read, bad_lines = [], 0, 0
    for lines in _numbered_lines(path, None):
        parsed = lines.select(
            "line",
            "text",
            "invalid_utf8",
            *[
                _parse(col, pl.col("text").str.json_path_match(f"$.{key}")).alias(col)
                for col, key in AMAZON_FIELDS.items()
            ],
        )
        parsed = _spoil_invalid_ids(parsed)
        rows_read += parsed.height
        parsed, bad = _handle_bad_rows(
            parsed,
            path,
            on_bad_line,
            lambda row: _explain_bad_json_line(row["text"], row["invalid_utf8"]),
            f"a JSON object with {', '.join(AMAZON_FIELDS.values())} in UTF-8, rating and timestamp numeric",
        )
        bad_lines += bad
        frames.append(parsed.select("line", *RAW_SCHEMA))
    return _reviews(frames, rows_read, bad_lines)


def _spoil_invalid_ids(parsed: pl.DataFrame) -> pl.DataFrame:
    """Null the ids holding a U+FFFD from the lossy decode of a line that is not UTF-8: those lines are bad."""
    if not parsed["invalid_utf8"].any():
        return parsed
    return parsed.with_columns(
        pl.when(pl.col("invalid_utf8") & pl.col(col).str.contains("\ufffd", literal=True))
        .then(None)
        .otherwise(pl.col(col))
        .alias(col)
        for col in ("user_id", "item_id")
    )


def _reviews(frames: list[pl.DataFrame], rows_read: int, bad_lines: int) -> Reviews:
    """The blocks a block reader parsed (`line` and the RAW_SCHEMA columns) as one Reviews."""
    frame = pl.concat(frames) if frames else pl.DataFrame(schema={"line": pl.UInt32, **RAW_SCHEMA})
    return Reviews(frame.with_columns(pl.col("line").cast(pl.Int64)), rows_read, bad_lines)


def read_ratings_csv(
    path: str | os.PathLike,
    columns: list[str],
    header: bool,
    on_bad_line: str,
) -> Reviews:
    """Read the Amazon "ratings only" CSV layout (item,user,rating,timestamp by default).

    With a header line, the columns are taken by the names it gives them, in whatever order; without
    one, in the order of `columns`. polars reads a well-formed file; one it refuses (a row with too
    many fields, bytes that are not UTF-8) goes through Python's csv module, which knows the line. A
    row with nothing but whitespace in any column (a blank line, spaces, or bare commas) is skipped, as
    blank lines are in the other layouts.
    """
    path = Path(path)
    order = _csv_header(path, columns) if header else list(columns)
    names = [CSV_NAMES[c] for c in order]
    try:
        raw = pl.read_csv(
            path,
            has_header=header,
            new_columns=names,
            schema_overrides={name: pl.String for name in names},
            truncate_ragged_lines=False,
        )
        raw = raw.with_row_index("line", offset=2 if header else 1).filter(
            pl.any_horizontal(pl.col(names).str.strip_chars() != "")
        )
    except (pl.exceptions.PolarsError, OSError) as err:
        logger.info("%s: the fast CSV reader gave up (%s); reading it row by row", path, str(err).split("\n")[0])
        raw = _read_csv_rows(path, names, header)
    parsed = raw.with_columns(
        *[_parse(column, pl.col(column)) for column in ("rating", "timestamp")],
        original=pl.struct(*CSV_NAMES.values()),
    )

    def explain(row: dict[str, Any]) -> str:
        if row.get("problem") is not None:
            return row["problem"]
        original = row["original"]
        for column in ("user_id", "item_id", "rating", "timestamp"):
            if original[column] is None:
                return f"missing value in column {column.removesuffix('_id')!r}"
            if row[column] is None:
                return f"column {column!r} {_number_problem(column, original[column])}"
        return "unreadable row"

    def advise(row: dict[str, Any]) -> str | None:
        # A header read as data: its rating and timestamp columns hold text, not numbers.
        words = [row["original"][c] is not None and row[c] is None for c in ("rating", "timestamp")]
        if header or row["line"] != 1 or row.get("problem") is not None or not all(words):
            return None
        return f"line 1 looks like a header: set source.header: true; a header names the columns {', '.join(columns)}"

    expected = f"{len(columns)} comma-separated columns ({', '.join(order)}), rating and timestamp numeric"
    parsed, bad = _handle_bad_rows(parsed, path, on_bad_line, explain, expected, advise)
    frame = parsed.select("line", *RAW_SCHEMA).with_columns(pl.col("line").cast(pl.Int64))
    return Reviews(frame, raw.height, bad)


def _csv_header(path: Path, columns: list[str]) -> list[str]:
    """The columns in the order the header line names them; it must name each of `columns` once."""
    with _open_binary(path) as handle:
        first = handle.readline(1 << 20)
    text = first.decode("utf-8-sig", errors="replace").rstrip("\r\n")
    names = [name.strip().lower() for name in next(csv.reader([text]), [])]
    if not set(names) & set(CSV_NAMES):
        raise DataError(
            f"{path}, line 1: source.header is true, but this line ({text[:200]!r}) names none of the columns "
            f"{', '.join(CSV_NAMES)}; set source.header: false if the file has no header line"
        )
    if sorted(names) != sorted(columns):
        problems = [f"no column {c!r}" for c in columns if c not in names]
        problems += [f"unknown column {n!r}" for n in dict.fromkeys(names) if n not in columns]
        problems += [f"column {n!r} twice" for n in dict.fromkeys(names) if names.count(n) > 1]
        raise DataError(
            f"{path}, line 1: the header ({', '.join(names)}) contradicts source.columns ({', '.join(columns)}): "
            f"{'; '.join(problems)}"
        )
    if names != list(columns):
        logger.info("%s: the header orders the columns %s; reading them by name", path, ", ".join(names))
    return names


def _read_csv_rows(path: Path, names: list[str], header: bool) -> pl.DataFrame:
    """Python's csv module, row by row: slow, but it knows the line and the field count of every row.

    A row that cannot be used keeps only its line and the reason, in `problem`: too many or too few
    fields, or a field that is not UTF-8. Rows of whitespace only are dropped, as `read_ratings_csv` drops them.
    """
    values: dict[str, list[Any]] = {name: [] for name in ["line", *names, "problem"]}
    frames: list[pl.DataFrame] = []
    rows, line = 0, 1
    with (
        _open_binary(path) as binary,
        io.TextIOWrapper(
            cast(io.BufferedReader, binary), encoding="utf-8", errors="surrogateescape", newline=""
        ) as text,
    ):
        reader = csv.reader(text)
        try:
            for record in reader:
                start, line = line, reader.line_num + 1
                if not any(value.strip() for value in record) or (header and start == 1):
                    continue
                rows += 1
                problem: str | None = None
                if len(record) != len(names):
                    problem = f"{len(record)} fields, not {len(names)}"
                else:
                    for name, value in zip(names, record, strict=True):
                        try:
                            value.encode("utf-8")
                        except UnicodeEncodeError:
                            raw_value = value.encode("utf-8", "surrogateescape")
                            problem = f"column {name.removesuffix('_id')!r} is not valid UTF-8: {raw_value!r}"
                            break
                values["line"].append(start)
                values["problem"].append(problem)
                fields: list[str | None] = [*record] if problem is None else [None] * len(names)
                for column, field in zip(names, fields, strict=True):
                    values[column].append(field or None)
                if len(values["line"]) >= CSV_CHUNK_ROWS:
                    frames.append(_csv_chunk(values))
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise _cut_short(str(path), _describe_cut(err, "the gzip stream"), rows, line) from err
        except csv.Error as err:
            raise DataError(f"{path}, line {reader.line_num}: not a CSV row ({err})") from err
    frames.append(_csv_chunk(values))
    return pl.concat(frames).select("line", *CSV_NAMES.values(), "problem")


def _csv_chunk(values: dict[str, list[Any]]) -> pl.DataFrame:
    """The rows collected so far as a frame (emptying the lists, so memory stays bounded)."""
    frame = pl.DataFrame(
        {name: column for name, column in values.items()},
        schema={name: pl.Int64 if name == "line" else pl.String for name in values},
    )
    for column in values.values():
        column.clear()
    return frame


@dataclass(frozen=True)
class MovieLensLayout:
    """Where a GroupLens archive keeps its ratings, and how they are written."""

    file: str  # the ratings file, in the archive's top folder (named like the variant)
    separator: str
    header: bool  # with a header, columns go by name (MOVIELENS_HEADER); without, user, item, rating, timestamp


MOVIELENS_LAYOUTS = {
    "ml-100k": MovieLensLayout("u.data", "\t", header=False),
    "ml-1m": MovieLensLayout("ratings.dat", "::", header=False),
    **{variant: MovieLensLayout("ratings.csv", ",", header=True) for variant in ("ml-20m", "ml-25m", "ml-32m")},
}
MOVIELENS_HEADER = {"userId": "user_id", "movieId": "item_id", "rating": "rating", "timestamp": "timestamp"}
RECBOLE_FIELDS = {"user_id": "user_id", "item_id": "item_id", "rating": "rating", "timestamp": "timestamp"}
# A RecBole file without a rating field lists interactions: each counts as this rating, above any usual
# preprocess.min_rating, so that every interaction is kept.
IMPLICIT_RATING = 5.0


def read_movielens(path: str | os.PathLike, variant: str, on_bad_line: str) -> Reviews:
    """Read the ratings of a GroupLens MovieLens archive: the zip as published, or its extracted ratings file.

    `variant` (ml-100k, ml-1m, ml-20m, ml-25m, ml-32m) names the member inside the zip and its layout;
    a file that is not a zip is read as that member, extracted (gzipped or not).
    """
    path = Path(path)
    if variant not in MOVIELENS_LAYOUTS:
        raise ValueError(f"unknown MovieLens variant {variant!r}; expected one of {', '.join(MOVIELENS_LAYOUTS)}")
    layout = MOVIELENS_LAYOUTS[variant]
    member = _zip_member(path, f"{variant}/{layout.file}", variant) if zipfile.is_zipfile(path) else None
    if member is None and path.suffix.lower() == ".zip":
        raise DataError(f"{path}: not a complete zip file (it has no central directory); fetch it again")
    if layout.header:
        fields = _header_fields(path, member, layout.separator, MOVIELENS_HEADER, optional=())
    else:
        fields = _Fields({column: index for index, column in enumerate(RAW_SCHEMA)}, list(RAW_SCHEMA))
    what = f"MovieLens {variant} ratings"
    return _read_separated(path, member, layout.separator, fields, layout.header, on_bad_line, what)


def read_recbole(path: str | os.PathLike, on_bad_line: str) -> Reviews:
    """Read a RecBole atomic `.inter` file: tab-separated, a typed header such as `user_id:token item_id:token`.

    Columns go by field name (the part before the colon), in any order; other fields are ignored. The
    `rating` field is optional: without it every row is an interaction and counts as rating 5
    (IMPLICIT_RATING), so the rating filter keeps it.
    """
    path = Path(path)
    fields = _header_fields(path, None, "\t", RECBOLE_FIELDS, optional=("rating",))
    return _read_separated(path, None, "\t", fields, True, on_bad_line, "RecBole atomic interactions")


@dataclass(frozen=True)
class _Fields:
    """Where our columns are among a line's fields, and what the file calls each field."""

    index: dict[str, int]  # RAW_SCHEMA column -> 0-based field; a column missing here has a fixed value
    names: list[str]

    def label(self, column: str) -> str:
        return f"field {self.index[column] + 1} ({self.names[self.index[column]]})"


def _zip_member(path: Path, member: str, variant: str) -> str:
    """`member`, if the zip holds it; a zip without it is most likely another variant's archive."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if member not in names:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise DataError(
            f"{path}: no member {member} in this zip (it holds {shown or 'nothing'}); "
            f"is source.variant: {variant} the archive's variant?"
        )
    return member


def _header_fields(
    path: Path, member: str | None, separator: str, known: dict[str, str], optional: tuple[str, ...]
) -> _Fields:
    """Our columns by the names the header line gives them (`known`: header name -> column); RecBole's
    `name:type` fields go by the name before the colon. Every column not `optional` must be named."""
    with _open_binary(path, member) as handle:
        first = handle.readline(1 << 20)
    text = first.decode("utf-8-sig", errors="replace").rstrip("\r\n")
    names = [field.strip() for field in text.split(separator)]
    index: dict[str, int] = {}
    for position, name in enumerate(names):
        column = known.get(name.split(":", 1)[0])
        if column is not None:
            index.setdefault(column, position)
    missing = [name for name, column in known.items() if column not in index and column not in optional]
    if missing:
        raise DataError(
            f"{_where(path, member)}, line 1: the header {text[:200]!r} lacks the field(s) {', '.join(missing)}; "
            f"expected a {separator!r}-separated header naming {', '.join(known)}"
            + (f" ({', '.join(optional)} optional)" if optional else "")
        )
    return _Fields(index, names)


def _read_separated(
    path: Path, member: str | None, separator: str, fields: _Fields, header: bool, on_bad_line: str, what: str
) -> Reviews:
    """Lines split at a literal `separator` (tab, `::`, a comma without quoting), a block at a time.

    Every line must have exactly as many fields as the header (or the four columns). A column that
    `fields` does not place is the rating of a file that has none: IMPLICIT_RATING.
    """
    width = len(fields.names)
    where = _where(path, member)
    parts = pl.col("parts")  # split once per block: polars would split again for every column taken from it
    raw = {column: parts.list.get(index, null_on_oob=True).str.strip_chars() for column, index in fields.index.items()}
    fits = pl.col("width") == width

    def explain(row: dict[str, Any]) -> str:
        if row["width"] != width:
            return f"{row['width']} fields, not {width}"
        for column in fields.index:
            value = row[f"raw_{column}"]
            if not value:
                return f"{fields.label(column)} is empty"
            if row["invalid_utf8"] and "\ufffd" in value:
                return f"{fields.label(column)} is not valid UTF-8"
            if row[column] is None:
                return f"{fields.label(column)} {_number_problem(column, value)}"
        return "unreadable line"

    expected = (
        f"{what}: {width} fields separated by {separator!r} ({', '.join(fields.names)}), rating and timestamp numeric"
    )
    frames, rows_read, bad_lines = [], 0, 0
    for lines in _numbered_lines(path, member):
        if header:
            lines = lines.filter(pl.col("line") > 1)
        parsed = lines.with_columns(parts=pl.col("text").str.strip_chars_end("\r").str.split(separator))
        parsed = parsed.with_columns(width=parts.list.len(), **{f"raw_{c}": expr for c, expr in raw.items()})
        parsed = parsed.with_columns(
            pl.when(fits & (pl.col(f"raw_{column}") != "")).then(_parse(column, pl.col(f"raw_{column}"))).alias(column)
            for column in fields.index
        )
        if "rating" not in fields.index:
            parsed = parsed.with_columns(rating=pl.when(fits).then(pl.lit(IMPLICIT_RATING)))
        parsed = _spoil_invalid_ids(parsed)
        rows_read += parsed.height
        parsed, bad = _handle_bad_rows(parsed, where, on_bad_line, explain, expected)
        bad_lines += bad
        frames.append(parsed.select("line", *RAW_SCHEMA))
    return _reviews(frames, rows_read, bad_lines)


def _require_rows(rows: int, step: str, before: int, hint: str) -> None:
    if rows == 0:
        raise DataError(f"no interactions left after {step} ({before} before it); {hint}")


def _encode(ids: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Integer codes for string ids (each id's position among the sorted distinct ids), and those ids.

    Codes sort like the ids, so numbering the survivors in code order later gives sorted-id order.
    The lookup goes by 64-bit hash, about twice as fast as by string (`rank("dense")` on strings is
    ten times slower still); it is exact when no two distinct ids share a hash, which is checked,
    with the lookup by string as the fallback. (On a Series: as an expression on a frame of many
    chunks, `replace_strict` rebuilds its table for every chunk.)
    """
    distinct = ids.unique().sort()
    hashes = distinct.hash()
    if hashes.n_unique() < len(distinct):
        return ids.cast(pl.Enum(distinct)).to_physical(), distinct
    positions = pl.int_range(len(distinct), dtype=pl.UInt32, eager=True)
    return ids.hash().replace_strict(hashes, positions), distinct


def _first_of_each_pair(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Whether each row is the first of its (user, item) pair.

    A stable sort of the packed pairs lines up each pair's rows in their original order; it is about
    three times faster than hashing the pairs.
    """
    pairs = (users.astype(np.int64) << 32) | items
    order = pl.DataFrame({"pair": pairs}).select(pl.arg_sort_by("pair", maintain_order=True)).to_series().to_numpy()
    sorted_pairs = pairs[order]
    first_in_order = np.ones(len(pairs), dtype=bool)
    np.not_equal(sorted_pairs[1:], sorted_pairs[:-1], out=first_in_order[1:])
    first = np.empty(len(pairs), dtype=bool)
    first[order] = first_in_order
    return first


def _kcore_keep(users: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Which (user code, item code) rows survive the iterative k-core, and the number of passes.

    Each pass counts only the rows still in, so passes get cheaper as the core shrinks; the last
    pass is the one that finds nothing left to drop.
    """
    rows = np.arange(len(users))
    keep = np.zeros(len(users), dtype=bool)
    iterations = 0
    while True:
        iterations += 1
        enough = (np.bincount(users)[users] >= k) & (np.bincount(items)[items] >= k)
        if enough.all():
            keep[rows] = True
            return keep, iterations
        rows, users, items = rows[enough], users[enough], items[enough]


def kcore(frame: pl.DataFrame, k: int) -> tuple[pl.DataFrame, int]:
    """Drop users and items with fewer than k interactions, repeatedly, until none is left to drop.

    One pass is not enough: removing a sparse item can push a user below k, and so on. The ids may
    be strings or integers. Also returns the number of passes, counting the last one, which drops
    nothing.
    """
    (users, _), (items, _) = (_encode(frame[column].cast(pl.String)) for column in ("user_id", "item_id"))
    keep, iterations = _kcore_keep(users.to_numpy(), items.to_numpy(), k)
    return frame.filter(pl.Series(keep)), iterations


def _sort_by_user_time_line(frame: pl.DataFrame) -> pl.DataFrame:
    """Sort by (user, timestamp, line); `frame` must be in line order.

    A stable sort on one int64 key packing user and timestamp is about three times faster than a
    three-column sort, and stability orders timestamp ties by line. The three-column sort remains
    for timestamps too far apart to pack.
    """
    low, high = cast(int, frame["timestamp"].min()), cast(int, frame["timestamp"].max())
    span = high - low + 1
    if (cast(int, frame["user"].max()) + 1) * span >= 2**63:
        return frame.sort("user", "timestamp", "line")
    return frame.sort(pl.col("user").cast(pl.Int64) * span + (pl.col("timestamp") - low), maintain_order=True)


def _renumber(codes: np.ndarray, distinct: pl.Series, name: str) -> tuple[pl.Series, pl.DataFrame]:
    """Ids 1, 2, ... for the codes still present, in code order (so in sorted original-id order).

    Returns each row's new id and the table from new id to original id.
    """
    present = np.bincount(codes, minlength=len(distinct)) > 0
    new_ids = np.cumsum(present, dtype=np.int32)
    table = pl.DataFrame(
        {
            name: np.arange(1, new_ids[-1] + 1, dtype=np.int32),
            f"{name}_id": distinct.filter(pl.Series(present)),
        }
    )
    return pl.Series(name, new_ids[codes]), table


def preprocess(reviews: Reviews, min_rating: float, kcore_k: int) -> Preprocessed:
    """Turn parsed reviews into numbered interactions and leave-one-out splits.

    Ids become integer codes right after the rating filter; everything after that works on
    integers, and only the surviving ids are looked up again, for the id tables.
    """
    if kcore_k < 3:
        raise ValueError(
            f"kcore must be at least 3 so that every user keeps train, valid and test items, got {kcore_k}"
        )
    frame = reviews.frame
    stats: dict[str, Any] = {"rows_read": reviews.rows_read, "bad_lines": reviews.bad_lines}
    _require_rows(frame.height, "reading", reviews.rows_read, "the file holds no valid reviews")

    rated = frame.filter(pl.col("rating") > min_rating)
    if not rated["line"].is_sorted():
        rated = rated.sort("line")
    stats["after_rating_filter"] = rated.height
    _require_rows(
        rated.height, f"the rating filter (rating > {min_rating})", frame.height, "lower preprocess.min_rating"
    )

    with ThreadPoolExecutor(2) as pool:  # both id columns at once: polars releases the GIL
        (user_codes, user_ids), (item_codes, item_ids) = pool.map(_encode, (rated["user_id"], rated["item_id"]))
    # One sort serves both de-duplication (the first row of a pair is its earliest review, ties
    # broken by line) and the final order (numbering survivors in code order keeps it).
    ordered = _sort_by_user_time_line(rated.select("line", "timestamp", "rating", user=user_codes, item=item_codes))
    del rated, user_codes, item_codes
    users, items = ordered["user"].to_numpy(), ordered["item"].to_numpy()
    rows = np.flatnonzero(_first_of_each_pair(users, items))
    stats["after_dedup"] = len(rows)

    in_core, iterations = _kcore_keep(users[rows], items[rows], kcore_k)
    rows = rows[in_core]
    stats["after_kcore"] = len(rows)
    stats["kcore_iterations"] = iterations
    _require_rows(
        len(rows), f"{kcore_k}-core filtering", stats["after_dedup"], "lower preprocess.kcore or use more data"
    )

    user, users_table = _renumber(users[rows], user_ids, "user")
    item, items_table = _renumber(items[rows], item_ids, "item")
    interactions = ordered[rows].select(user, item, "timestamp", "rating")
    del ordered, users, items, rows
    splits = (
        interactions.group_by("user", maintain_order=True)
        .agg(pl.col("item"))
        .select(
            "user",
            train=pl.col("item").list.slice(0, pl.col("item").list.len() - 2),
            valid=pl.col("item").list.get(-2),
            test=pl.col("item").list.get(-1),
        )
    )
    stats.update(
        users=users_table.height,
        items=items_table.height,
        interactions=interactions.height,
        density=interactions.height / (users_table.height * items_table.height),
    )
    logger.info("preprocess: %s", stats)
    return Preprocessed(interactions, users_table, items_table, splits, stats)


def read_reviews(path: str | os.PathLike, source: dict[str, Any], on_bad_line: str) -> Reviews:
    """Dispatch on the configured raw layout (synthetic data uses the amazon2018 layout)."""
    kind = source["kind"]
    if kind == "ratings_csv":
        return read_ratings_csv(path, source["columns"], source["header"], on_bad_line)
    if kind == "movielens":
        return read_movielens(path, source["variant"], on_bad_line)
    if kind == "recbole":
        return read_recbole(path, on_bad_line)
    return read_amazon2018(path, on_bad_line)
