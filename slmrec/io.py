"""Artifact I/O: atomic writes, checksums and the provenance manifest every stage directory holds."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import pyarrow
from safetensors import SafetensorError

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


class ArtifactError(ValueError):
    """An intermediate artifact exists but cannot be read, so the rule that made it must run again."""


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


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Like `atomic_path`, for a directory artifact: build it under a temporary name, then rename.

    The directory gets 0777 less the umask, not the 0700 of the temporary directory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
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
