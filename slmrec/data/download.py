"""Fetch a raw data file from a list of mirrors: resumable, verified and atomic.

The Amazon review files are large and their mirrors drop connections. A download
therefore keeps what it has received in ``<dest>.part``, resumes it with an HTTP
``Range`` request (in this attempt, the next one, or the next run), and moves it
onto ``dest`` only once the whole body has arrived and matched its checksum. A
file at ``dest`` is thus always complete.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.response import addinfourl

from tqdm import tqdm

from slmrec import __version__
from slmrec.io import sha256_file, utc_now, write_manifest

logger = logging.getLogger(__name__)

USER_AGENT = f"slmrec/{__version__}"
_CHUNK = 1 << 16
# Errors one attempt can end with. URLError, HTTPError, timeouts and resets are all OSErrors;
# http.client's own errors (IncompleteRead, BadStatusLine) are not.
_TRANSIENT = (OSError, http.client.HTTPException)


class DownloadError(RuntimeError):
    """No mirror delivered the file, or the file did not match its checksum."""


class _ChecksumMismatch(Exception):
    """The body arrived whole but is not the expected file; retrying this mirror will not help."""


def download(
    urls: list[str],
    dest: str | os.PathLike,
    sha256: str | None = None,
    *,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download the first mirror that works to `dest` and return its path.

    Each mirror gets up to `retries` attempts, `backoff * 2**attempt` seconds apart. A dropped
    connection keeps the received bytes, so the next attempt resumes rather than restarts. A
    checksum mismatch or a client error (404 and the like) moves straight on to the next mirror.
    Any file already at `dest` is removed first, so a failure never leaves an old file there
    that looks like this download's result.
    """
    if not urls:
        raise ValueError("download() needs at least one URL")
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
                if sha256 is not None:
                    _verify(part, sha256)
            except _ChecksumMismatch as err:
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
    if offset and url.startswith(("http://", "https://")):
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
    else:  # 200, or a file:// URL (no status): the server sent the whole file
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
        raise _ChecksumMismatch(f"checksum mismatch: expected sha256 {expected.lower()}, got {actual}")


def _is_permanent(err: BaseException) -> bool:
    """A client error other than timeout or rate limiting will not go away on retry."""
    return isinstance(err, urllib.error.HTTPError) and 400 <= err.code < 500 and err.code not in (408, 429)


def run(urls: list[str], sha256: str | None, output: Any) -> None:
    """The `download` rule: fetch, then record where the file came from."""
    started = utc_now()
    download(urls, output.raw, sha256)
    write_manifest(
        output.manifest,
        stage="download",
        config={"urls": urls, "sha256": sha256},
        inputs=[],
        outputs=[output.raw],
        started=started,
    )
