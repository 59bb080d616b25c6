"""The downloader against a real HTTP server on 127.0.0.1: resume, mirrors, checksums, content checks, atomicity."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from slmrec.data.download import download
from slmrec.errors import DownloadError

_RNG = random.Random(0)
# A real .json.gz (the downloader checks the gzip stream and the first record), about 200 kB.
PAYLOAD = gzip.compress(
    b"".join(
        json.dumps({"reviewerID": f"u{i}", "asin": f"a{i}", "reviewText": _RNG.randbytes(150).hex()}).encode() + b"\n"
        for i in range(700)
    ),
    mtime=0,
)
HTML = b"<!DOCTYPE html>\n<html><head><title>Service Unavailable</title></head><body>Try later</body></html>\n"
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
FAST = {"backoff": 0, "timeout": 5, "progress": False}


@dataclass
class Behaviour:
    """How a test server misbehaves, and what it saw."""

    honour_range: bool = True
    drop_first: int = 0  # this many responses send half the body, then hang up
    status: int | None = None  # answer every request with this error instead
    body: bytes = PAYLOAD  # what a 200 sends
    cut_without_length: bool = False  # send half the body with no Content-Length, then hang up (HTTP/1.0)
    ranges: list[str | None] = field(default_factory=list)
    user_agents: list[str | None] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        behaviour = self.server.behaviour
        requested = self.headers.get("Range")
        behaviour.ranges.append(requested)
        behaviour.user_agents.append(self.headers.get("User-Agent"))
        if behaviour.status is not None:
            self.send_error(behaviour.status)
            return

        if behaviour.cut_without_length:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(behaviour.body[: len(behaviour.body) // 2])
            self.close_connection = True
            return

        start = 0
        if requested and behaviour.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
            if start >= len(behaviour.body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(behaviour.body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(behaviour.body) - 1}/{len(behaviour.body)}")
        else:
            self.send_response(200)
        body = behaviour.body[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if behaviour.drop_first:
            behaviour.drop_first -= 1
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    behaviour: Behaviour


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[str, Behaviour]]]:
    """Start servers on demand; return the file URL and the server's record of requests."""
    servers: list[_Server] = []

    def start(**kwargs: object) -> tuple[str, Behaviour]:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.behaviour = Behaviour(**kwargs)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/Toys_5.json.gz", server.behaviour

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def dead_url() -> str:
    """A URL on a port nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/Toys_5.json.gz"


def test_plain_download_lands_at_dest(serve, tmp_path):
    url, seen = serve()
    dest = tmp_path / "raw" / "Toys_5.json.gz"

    assert download([url], dest, DIGEST, **FAST) == dest

    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "raw" / "Toys_5.json.gz.part").exists()
    assert seen.ranges == [None]
    assert seen.user_agents[0].startswith("slmrec/")


def test_dropped_connection_resumes_with_range(serve, tmp_path):
    url, seen = serve(drop_first=1)
    dest = tmp_path / "Toys_5.json.gz"

    download([url], dest, DIGEST, **FAST)

    assert dest.read_bytes() == PAYLOAD
    assert len(seen.ranges) == 2 and seen.ranges[0] is None
    offset = int(re.fullmatch(r"bytes=(\d+)-", seen.ranges[1]).group(1))
    assert 0 < offset < len(PAYLOAD)


def test_part_from_an_earlier_run_is_resumed(serve, tmp_path):
    url, seen = serve()
    dest = tmp_path / "Toys_5.json.gz"
    (tmp_path / "Toys_5.json.gz.part").write_bytes(PAYLOAD[:50_000])

    download([url], dest, DIGEST, **FAST)

    assert dest.read_bytes() == PAYLOAD
    assert seen.ranges == ["bytes=50000-"]


def test_server_ignoring_range_restarts_the_part(serve, tmp_path):
    url, seen = serve(honour_range=False)
    dest = tmp_path / "Toys_5.json.gz"
    (tmp_path / "Toys_5.json.gz.part").write_bytes(PAYLOAD[:50_000])

    download([url], dest, DIGEST, **FAST)

    assert dest.read_bytes() == PAYLOAD  # the 200 body replaced the part, not appended to it
    assert seen.ranges == ["bytes=50000-"]


def test_unsatisfiable_range_restarts_from_scratch(serve, tmp_path):
    url, seen = serve()
    dest = tmp_path / "Toys_5.json.gz"
    (tmp_path / "Toys_5.json.gz.part").write_bytes(PAYLOAD + b"stale tail")

    download([url], dest, DIGEST, **FAST)

    assert dest.read_bytes() == PAYLOAD
    assert seen.ranges == [f"bytes={len(PAYLOAD) + 10}-", None]


def test_checksum_mismatch_fails_and_leaves_nothing(serve, tmp_path):
    url, seen = serve()
    dest = tmp_path / "Toys_5.json.gz"
    wrong = "0" * 64

    with pytest.raises(DownloadError) as excinfo:
        download([url], dest, wrong, **FAST)

    message = str(excinfo.value)
    assert url in message and wrong in message and DIGEST in message and "checksum mismatch" in message
    assert not dest.exists()
    assert not (tmp_path / "Toys_5.json.gz.part").exists()
    assert len(seen.ranges) == 1  # a wrong file is not fetched again from the same mirror


def test_falls_back_to_the_next_mirror(serve, tmp_path):
    broken, broken_seen = serve(status=500)
    missing, missing_seen = serve(status=404)
    good, _ = serve()
    dest = tmp_path / "Toys_5.json.gz"

    download([dead_url(), broken, missing, good], dest, DIGEST, retries=2, **FAST)

    assert dest.read_bytes() == PAYLOAD
    assert len(broken_seen.ranges) == 2  # a server error may pass: retried
    assert len(missing_seen.ranges) == 1  # a 404 will not: next mirror at once


def test_all_mirrors_failing_names_each_and_leaves_no_dest(serve, tmp_path):
    refused = dead_url()
    broken, _ = serve(status=500)
    dest = tmp_path / "Toys_5.json.gz"
    dest.write_bytes(b"an old file that must not pass for this download")

    with pytest.raises(DownloadError) as excinfo:
        download([refused, broken], dest, DIGEST, retries=2, **FAST)

    message = str(excinfo.value)
    assert refused in message and broken in message
    assert "Connection refused" in message and "500" in message
    assert not dest.exists()


# --- bad input: bodies that are not the file, URLs that are not mirrors --------------------------------------


def test_body_cut_short_without_content_length_is_refused_for_the_next_mirror(serve, tmp_path):
    # HTTP/1.0, no Content-Length, the server hangs up halfway: only the gzip check notices.
    cut, cut_seen = serve(cut_without_length=True)
    good, _ = serve()
    dest = tmp_path / "Toys_5.json.gz"

    download([cut, good], dest, None, **FAST)

    assert dest.read_bytes() == PAYLOAD
    assert len(cut_seen.ranges) == 1  # a wrong body is not fetched again from the same mirror


def test_truncated_and_html_bodies_fail_naming_the_file_and_each_reason(serve, tmp_path):
    cut, _ = serve(cut_without_length=True)
    html, _ = serve(body=HTML)
    dest = tmp_path / "raw" / "Toys_5.json.gz"

    with pytest.raises(DownloadError) as excinfo:
        download([cut, html], dest, None, **FAST)

    message = str(excinfo.value)
    assert "could not download Toys_5.json.gz" in message
    assert f"{cut}: truncated download: the gzip stream ends early" in message
    assert f"{html}: not a gzip file" in message and "HTML page" in message
    assert sorted(p.name for p in dest.parent.iterdir()) == []  # neither the file nor a .part


@pytest.mark.parametrize(
    ("name", "reason"),
    [("Toys_5.json", "the first line is not a JSON object"), ("ratings.csv", "the first line is not a CSV row")],
)
def test_html_page_served_with_200_is_refused(serve, tmp_path, name, reason):
    url, _ = serve(body=HTML)
    dest = tmp_path / name

    with pytest.raises(DownloadError) as excinfo:
        download([url], dest, None, **FAST)

    message = str(excinfo.value)
    assert f"could not download {name}" in message and reason in message and "HTML page" in message
    assert list(tmp_path.iterdir()) == []


def test_uncompressed_json_and_csv_bodies_pass_the_check(serve, tmp_path):
    for name, body in (("Toys_5.json", gzip.decompress(PAYLOAD)), ("ratings.csv", b"A,u1,5.0,10\nB,u1,4.0,11\n")):
        url, _ = serve(body=body)
        assert download([url], tmp_path / name, None, **FAST).read_bytes() == body


def test_file_url_mirror_is_refused(serve, tmp_path):
    source = tmp_path / "mirror" / "Toys_5.json.gz"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    good, seen = serve()
    dest = tmp_path / "raw" / "Toys_5.json.gz"

    with pytest.raises(ValueError, match=re.escape(f"mirror URL {source.as_uri()!r} is not http")) as excinfo:
        download([good, source.as_uri()], dest, DIGEST, **FAST)

    assert "source.path" in str(excinfo.value)
    assert not dest.parent.exists() and seen.ranges == []  # refused before anything was fetched or written
