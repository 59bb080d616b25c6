"""Artifact I/O: atomic writes, checksums and the provenance manifest every stage directory holds."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import psutil
import pyarrow
from safetensors import SafetensorError

from slmrec.errors import ArtifactError

MANIFEST_SCHEMA_VERSION = 1
TRACKED_PACKAGES = ("torch", "transformers", "peft", "polars", "pyarrow", "numpy", "snakemake", "bitsandbytes")

# What the readers raise on a file cut short or garbled (FileNotFoundError is left alone: Snakemake
# reports a missing input itself, and a missing file is not a corrupt one).
CORRUPT_ARTIFACT_ERRORS = (
    SafetensorError,
    pl.exceptions.PolarsError,
    pyarrow.ArrowException,
    json.JSONDecodeError,
    UnicodeDecodeError,
    OSError,
)

P = TypeVar("P", bound="str | os.PathLike[str]")
T = TypeVar("T")

logger = logging.getLogger(__name__)


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else by setting it back."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path` and move it into place only if the block succeeds.

    A killed job therefore never leaves a half-written file that looks complete. The file gets the
    permissions an ordinary new file gets (0666 less the umask), not the 0600 of the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _strict_child(path: str | os.PathLike) -> Path:
    """`path`, if it names an entry strictly inside its parent directory: the only thing `atomic_dir` may replace.

    `results/backbones/..` is results/ itself, `.` the parent, and a symbolic link leads anywhere: replacing any
    of them would put a whole tree under `shutil.rmtree`.
    """
    raw = os.fspath(path)
    name = os.path.basename(raw.rstrip(os.sep))
    child = Path(raw)
    if name in ("", ".", "..") or child.resolve() != child.parent.resolve() / name:
        raise ValueError(
            f"refusing to replace {raw!r}: it is not an entry strictly inside its parent directory "
            f"(it resolves to {child.resolve()}), so replacing it would delete more than this artifact"
        )
    return child


def _apply_umask(root: Path) -> None:
    """Give `root` and everything under it the permissions of an ordinary new directory or file (0777 or 0666 less
    the umask): mkdtemp makes 0700, and writers such as save_pretrained go through 0600 temporary files."""
    umask = current_umask()
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o777 & ~umask)
        for name in files:
            if not os.path.islink(file := os.path.join(directory, name)):
                os.chmod(file, 0o666 & ~umask)


def _remove_leftovers(path: Path) -> None:
    """Remove what killed runs of `atomic_dir(path)` left behind (a converted 7B backbone is ~27 GB): the temporary
    directories made on this host by a process that is gone. Those made on another host are kept, as a job there may
    still be writing one, and named in the log; nothing of another output, or of a live process, is touched."""
    host = platform.node()
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d+)@(.+)\.[^.]+")  # .{name}.{pid}@{host}.{random}
    for leftover in path.parent.iterdir():
        owner = pattern.fullmatch(leftover.name)
        if not owner or leftover.is_symlink() or not leftover.is_dir():
            continue
        pid, owner_host = int(owner[1]), owner[2]
        if owner_host != host:
            logger.warning(
                "kept %s, left by pid %d on host %s (whose processes cannot be seen from here); "
                "delete it if no job there is writing %s",
                leftover,
                pid,
                owner_host,
                path,
            )
        elif not psutil.pid_exists(pid):
            logger.info("removing %s, left by a killed run (pid %d)", leftover, pid)
            shutil.rmtree(leftover)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Like `atomic_path`, for a directory artifact: build it under a temporary name, then rename.

    Everything in it gets 0777 or 0666 less the umask, not the 0700/0600 of temporary files. The temporary name
    records the owning process (`.{name}.{pid}@{host}.{random}`), so the next run of the same output removes what a
    killed run left once that process is gone, and never a directory a live job is writing. Only an entry strictly
    inside its parent directory is ever replaced.
    """
    path = _strict_child(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}@{platform.node()}.", dir=path.parent))
    try:
        yield tmp
        _apply_umask(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def read_artifact(path: P, reader: Callable[[P], T]) -> T:
    """`reader(path)`, with a failure to parse the file turned into an `ArtifactError` that names it.

    The readers' own errors (`incomplete metadata`, `must end with PAR1`) name no file; a killed copy or
    a full disk leaves such a file behind, and its rule only reruns when forced.
    """
    try:
        return reader(path)
    except FileNotFoundError:
        raise
    except CORRUPT_ARTIFACT_ERRORS as error:
        raise ArtifactError(
            f"{path} looks truncated or corrupt ({type(error).__name__}: {error}); "
            f"rerun the rule that makes it: snakemake --cores 1 --force {path}"
        ) from error


def write_parquet(path: str | os.PathLike, frame: pl.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_revision(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """The git commit of the code that made an artifact, and whether the tree had uncommitted edits."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_manifest(
    path: str | os.PathLike,
    *,
    stage: str,
    config: Any,
    inputs: Iterable[str | os.PathLike],
    outputs: Iterable[str | os.PathLike] = (),
    started: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record how an artifact was made, so a result can be traced back and stale inputs detected."""
    manifest = {
        "stage": stage,
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "config": config,
        "inputs": {str(p): sha256_file(p) for p in inputs},
        "outputs": {str(p): sha256_file(p) for p in outputs},
        "packages": package_versions(),
        "code": code_revision(),
        "host": platform.node(),
        "started": started,
        "finished": utc_now(),
    }
    if extra:
        manifest.update(extra)
    write_json(path, manifest)
    return manifest
