"""The downloader against a real HTTP server on 127.0.0.1: resume, mirrors, checksums, atomicity."""

from __future__ import annotations

import hashlib
import random
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from slmrec.data.download import DownloadError, download

PAYLOAD = random.Random(0).randbytes(200_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
FAST = {"backoff": 0, "timeout": 5, "progress": False}


@dataclass
class Behaviour:
    """How a test server misbehaves, and what it saw."""

    honour_range: bool = True
    drop_first: int = 0  # this many responses send half the body, then hang up
    status: int | None = None  # answer every request with this error instead
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

        start = 0
        if requested and behaviour.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
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


def test_file_url_is_copied(tmp_path):
    source = tmp_path / "mirror" / "Toys_5.json.gz"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    dest = tmp_path / "raw" / "Toys_5.json.gz"
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "Toys_5.json.gz.part").write_bytes(b"junk from an earlier run")

    download([source.as_uri()], dest, DIGEST, **FAST)

    assert dest.read_bytes() == PAYLOAD
