"""Fetch a raw data file from a list of mirrors: resumable, verified and atomic.

The Amazon review files are large and their mirrors drop connections. A download
therefore keeps what it has received in ``<dest>.part``, resumes it with an HTTP
``Range`` request (in this attempt, the next one, or the next run), and moves it
onto ``dest`` only once the whole body has arrived, looks like the file it is
named after (a ``.gz`` stream that ends cleanly, a ``.zip`` whose members pass
their CRC check, a first record that parses) and
matched its checksum. A file at ``dest`` is thus always complete. Mirrors are
http(s) only: a local file is read in place (``source.path``), never copied.
"""

from __future__ import annotations

import csv
import gzip
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from urllib.response import addinfourl

from tqdm import tqdm

from slmrec import __version__
from slmrec.errors import DownloadError
from slmrec.io import sha256_file

logger = logging.getLogger(__name__)

USER_AGENT = f"slmrec/{__version__}"
_CHUNK = 1 << 16
# Errors one attempt can end with. URLError, HTTPError, timeouts and resets are all OSErrors;
# http.client's own errors (IncompleteRead, BadStatusLine) are not.
_TRANSIENT = (OSError, http.client.HTTPException)
_SCHEMES = ("http", "https")
_FIRST_RECORD_BYTES = 1 << 20


class _NotTheFile(Exception):
    """The body arrived but is not the expected file (content check or checksum); retrying this mirror will not help."""


def download(
    urls: list[str],
    dest: str | os.PathLike,
    sha256: str | None,
    *,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download the first mirror that works to `dest` and return its path.

    Each mirror gets up to `retries` attempts, `backoff * 2**attempt` seconds apart. A dropped
    connection keeps the received bytes, so the next attempt resumes rather than restarts. A
    body that is not the file `dest` names (see `_check_content`), a checksum mismatch or a
    client error (404 and the like) moves straight on to the next mirror. Any file already at
    `dest` is removed first, so a failure never leaves an old file there that looks like this
    download's result. `sha256` None skips the checksum. Only http(s) URLs are accepted.
    """
    if not urls:
        raise ValueError("download() needs at least one URL")
    for url in urls:
        if urllib.parse.urlsplit(url).scheme.lower() not in _SCHEMES:
            raise ValueError(
                f"mirror URL {url!r} is not http:// or https://; a local file is read in place: "
                "give it as source.path instead of urls"
            )
    if retries < 1:
        raise ValueError(f"retries must be at least 1, got {retries}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    dest.unlink(missing_ok=True)

    errors: dict[str, str] = {}
    for url in urls:
        for attempt in range(retries):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            logger.info("downloading %s -> %s (attempt %d/%d)", url, dest, attempt + 1, retries)
            try:
                _attempt(url, part, timeout=timeout, progress=progress)
                _check_content(part, dest.name)
                if sha256 is not None:
                    _verify(part, sha256)
            except _NotTheFile as err:
                part.unlink(missing_ok=True)
                errors[url] = str(err)
                logger.warning("%s: %s", url, err)
                break
            except _TRANSIENT as err:
                errors[url] = f"{type(err).__name__}: {err}"
                logger.warning("%s: attempt %d/%d failed: %s", url, attempt + 1, retries, errors[url])
                if _is_permanent(err):
                    break
            else:
                os.replace(part, dest)
                logger.info("downloaded %s (%d bytes)", dest, dest.stat().st_size)
                return dest

    details = "\n".join(f"  {url}: {error}" for url, error in errors.items())
    raise DownloadError(f"could not download {dest.name} from any mirror:\n{details}")


def _attempt(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    """Bring `part` up to the full body of `url`, resuming from its current size."""
    try:
        response = _open(url, part, timeout)
    except urllib.error.HTTPError as err:
        # 416: our offset is at or past the end of the file, so the part cannot be trusted.
        if err.code != 416 or not part.exists():
            raise
        err.close()
        logger.warning("%s: cannot resume at byte %d (HTTP 416); restarting", url, _size(part))
        part.unlink()
        response = _open(url, part, timeout)
    with response:
        _receive(response, part, progress)


def _open(url: str, part: Path, timeout: float) -> http.client.HTTPResponse | addinfourl:
    """Request `url`, asking only for the bytes after those already in `part`."""
    headers = {"User-Agent": USER_AGENT}
    offset = _size(part)
    if offset:
        headers["Range"] = f"bytes={offset}-"
        logger.info("%s: resuming at byte %d", url, offset)
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _receive(response: http.client.HTTPResponse | addinfourl, part: Path, progress: bool) -> None:
    """Append a 206 body to `part`, or replace `part` with any other body; fail if it comes up short."""
    if response.status == 206:
        offset = _size(part)
        content_range = response.headers.get("Content-Range", "")
        match = re.match(r"bytes (\d+)-", content_range)
        if not match or int(match.group(1)) != offset:
            part.unlink(missing_ok=True)  # appending a body that starts elsewhere would corrupt the file
            raise ConnectionError(f"asked to resume at byte {offset}, got Content-Range {content_range!r}")
        mode = "ab"
    else:  # 200: the server sent the whole file
        offset, mode = 0, "wb"
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length is not None else None

    with (
        open(part, mode) as out,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            bar.update(len(chunk))

    # http.client returns a short body without complaint when the peer closes early.
    received = part.stat().st_size
    if total is not None and received != total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _verify(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected.lower():
        raise _NotTheFile(f"checksum mismatch: expected sha256 {expected.lower()}, got {actual}")


def _check_content(path: Path, name: str) -> None:
    """Refuse a body that is not the kind of file `name` promises, before it goes into place.

    A server that sends no Content-Length and hangs up early (HTTP/1.0) leaves a short body that
    nothing else catches, and an error page served with status 200 looks like a success. So a
    name ending in .gz must hold a gzip stream that ends cleanly, a .zip must be a whole archive
    whose members pass their CRC check, and the first record of a .json (JSON lines) or .csv file
    must parse. Other names are not checked.
    """
    lower = name.lower()
    if lower.endswith(".zip"):
        _check_zip(path)
        return
    inner = lower.removesuffix(".gz")
    if lower.endswith(".gz"):
        head = _check_gzip(path)
    else:
        with open(path, "rb") as handle:
            head = handle.read(_FIRST_RECORD_BYTES)
    if inner.endswith((".json", ".jsonl")):
        _check_first_record(head, "a JSON object", _is_json_object)
    elif inner.endswith(".csv"):
        _check_first_record(head, "a CSV row of comma-separated fields", _is_csv_row)


def _check_gzip(path: Path) -> bytes:
    """Decompress all of `path`; return the start of its data."""
    head = b""
    try:
        with gzip.open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK * 16):
                if len(head) < _FIRST_RECORD_BYTES:
                    head += chunk[: _FIRST_RECORD_BYTES - len(head)]
    except EOFError as err:
        raise _NotTheFile(f"truncated download: the gzip stream ends early ({_size(path)} bytes received)") from err
    except (gzip.BadGzipFile, zlib.error, OSError) as err:
        with open(path, "rb") as raw:
            start = raw.read(40)
        if not start.startswith(b"\x1f\x8b"):
            raise _NotTheFile(f"not a gzip file: it starts with {start!r}{_html_hint(start)}") from err
        raise _NotTheFile(f"damaged gzip stream ({err})") from err
    return head


def _check_zip(path: Path) -> None:
    """Read every member of `path`: a body cut short has no central directory, a garbled one fails a CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:
        with open(path, "rb") as raw:
            start = raw.read(40)
        raise _NotTheFile(f"not a complete zip file ({err}): it starts with {start!r}{_html_hint(start)}") from err
    if damaged is not None:
        raise _NotTheFile(f"damaged zip: member {damaged} fails its CRC check")


def _check_first_record(head: bytes, what: str, parses: Callable[[str], bool]) -> None:
    lines = [line for line in head.split(b"\n", 64)[:64] if line.strip()]
    if not lines:
        raise _NotTheFile(f"the file is empty, expected {what} on its first line")
    first = lines[0].strip()
    if not parses(first.decode("utf-8", errors="replace")):
        raise _NotTheFile(f"the first line is not {what}: {first[:80]!r}{_html_hint(first)}")


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _is_csv_row(text: str) -> bool:
    row = next(csv.reader([text]), [])
    return len(row) >= 2 and not text.startswith("<")


def _html_hint(start: bytes) -> str:
    return " (an HTML page, not the data)" if start.lstrip().startswith(b"<") else ""


def _is_permanent(err: BaseException) -> bool:
    """A client error other than timeout or rate limiting will not go away on retry."""
    return isinstance(err, urllib.error.HTTPError) and 400 <= err.code < 500 and err.code not in (408, 429)
