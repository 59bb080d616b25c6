"""Raw files the pipeline does not download itself: MovieLens 100K taken from the recbole wheel on PyPI.

Why: a machine whose only way out is the Python package registry cannot reach GroupLens or the Amazon
mirrors, but `pip download` works, and the recbole wheel ships MovieLens 100K as a RecBole atomic
`.inter` file. The wheel is fetched with pip (no dependencies, nothing installed), and the one member
is checked against the checksum recorded here before it is moved into place, so the file at the
destination is always the one this code was written against.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from slmrec.errors import FetchError
from slmrec.io import atomic_path, sha256_file

RECBOLE_REQUIREMENT = "recbole==1.2.1"
ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
# sha256 of ML100K_MEMBER in recbole-1.2.1-py3-none-any.whl (100,000 ratings and a typed header).
ML100K_SHA256 = "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
ML100K_DEST = "data/ml-100k.inter"  # where config.yaml's ml100k dataset reads it
FETCH_COMMAND = "python -m slmrec fetch-ml100k"


def extract_member(archive: str | os.PathLike, member: str, dest: str | os.PathLike, sha256: str) -> Path:
    """Copy one member of a zip (a wheel) to `dest`, atomically, only if its sha256 is `sha256`.

    On any failure nothing is left at `dest`: an earlier file there stays as it was.
    """
    archive, dest = Path(archive), Path(dest)
    with zipfile.ZipFile(archive) as wheel:
        if member not in wheel.namelist():
            raise FetchError(f"{archive}: no member {member}")
        with atomic_path(dest) as tmp:
            with wheel.open(member) as source, open(tmp, "wb") as out:
                shutil.copyfileobj(source, out)
            actual = sha256_file(tmp)
            if actual != sha256.lower():
                raise FetchError(
                    f"{archive}: {member} has sha256 {actual}, expected {sha256.lower()}; {dest} was not written"
                )
    return dest


def pip_download(requirement: str, directory: Path) -> Path:
    """`pip download --no-deps` one wheel into `directory` and return its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    command += [requirement, "-d", str(directory)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(f"`{' '.join(command)}` failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    wheels = sorted(directory.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"`{' '.join(command)}` left {len(wheels)} wheels in {directory}, expected one")
    return wheels[0]


def fetch_ml100k(dest: str | os.PathLike, download: Callable[[str, Path], Path] = pip_download) -> Path:
    """Fetch the recbole wheel (into a temporary directory) and write its ml-100k.inter to `dest`."""
    with tempfile.TemporaryDirectory(prefix="slmrec-recbole-") as tmp:
        wheel = download(RECBOLE_REQUIREMENT, Path(tmp))
        return extract_member(wheel, ML100K_MEMBER, dest, ML100K_SHA256)


def missing_local_source(dataset: str, path: str) -> str:
    """What to say when a dataset's `source.path` does not exist: how to get the file."""
    if Path(path).name == Path(ML100K_DEST).name:
        how = f"fetch it with `{FETCH_COMMAND} {path}` (MovieLens 100K from the {RECBOLE_REQUIREMENT} wheel on PyPI)"
    else:
        how = "put the file there, or point source.path at it (or give source.urls and file to download it)"
    return f"datasets.{dataset}.source.path: {path} does not exist; {how}"
