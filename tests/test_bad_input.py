"""Bad configuration refused by the schema, naming the key; artifacts written with the umask's permissions."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import jsonschema
import polars as pl
import pytest
from conftest import ROOT
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from slmrec.config import load_schema
from slmrec.io import atomic_dir, atomic_path, write_json, write_parquet

SCHEMA_PATH = ROOT / "config.schema.yaml"
URL = "https://example.org/Toys_5.json.gz"


def source_errors(source: dict) -> list[tuple[list, str]]:
    """Each schema error for a config with this one dataset source: (path to the key, message)."""
    config = {"datasets": {"toys": {"source": source}}}
    validator = jsonschema.Draft202012Validator(load_schema(SCHEMA_PATH))
    return [(list(error.absolute_path), error.message) for error in validator.iter_errors(config)]


def snakemake_message(source: dict) -> str:
    """What the user sees: Snakemake's validation error for the same config."""
    with pytest.raises(WorkflowError) as err:
        validate({"datasets": {"toys": {"source": source}}}, str(SCHEMA_PATH))
    return str(err.value)


# --- source.file and source.urls -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["amazon2018", "ratings_csv"])
@pytest.mark.parametrize("name", ["..", ".", "../Toys_5.json.gz", "raw/Toys_5.json.gz", "/etc/passwd", "a\\b"])
def test_source_file_with_a_path_is_refused_naming_the_key(kind, name):
    source = {"kind": kind, "file": name, "urls": [URL]}
    assert source_errors(source) == [
        (["datasets", "toys", "source", "file"], f"{name!r} does not match {_pattern()!r}")
    ]
    message = snakemake_message(source)
    assert "instance['datasets']['toys']['source']['file']" in message and repr(name) in message


@pytest.mark.parametrize("name", ["Toys_5.json.gz", "ratings..v2.csv", ".hidden.csv"])
def test_plain_file_names_are_accepted(name):
    assert source_errors({"kind": "ratings_csv", "file": name, "urls": [URL]}) == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x.json.gz", "/data/Toys_5.json.gz"])
def test_non_http_mirror_is_refused_naming_the_key(url):
    source = {"kind": "amazon2018", "file": "Toys_5.json.gz", "urls": [URL, url]}
    assert source_errors(source) == [
        (["datasets", "toys", "source", "urls", 1], f"{url!r} does not match '^https?://'")
    ]
    message = snakemake_message(source)
    assert "instance['datasets']['toys']['source']['urls'][1]" in message and repr(url) in message


def _pattern() -> str:
    return load_schema(SCHEMA_PATH)["$defs"]["file_name"]["pattern"]


# --- permissions of artifacts ---------------------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_get_the_umask_permissions_not_0600(tmp_path, umask):
    write_json(tmp_path / "stats.json", {"a": 1})
    write_parquet(tmp_path / "splits.parquet", pl.DataFrame({"user": [1]}))
    with atomic_path(tmp_path / "model.pt") as tmp:
        tmp.write_bytes(b"weights")
    plain = tmp_path / "plain.txt"
    plain.write_text("an ordinary file, for comparison")
    expected = 0o666 & ~umask  # 0644 under umask 022
    assert {name: mode(tmp_path / name) for name in ("stats.json", "splits.parquet", "model.pt")} == dict.fromkeys(
        ("stats.json", "splits.parquet", "model.pt"), expected
    )
    assert mode(plain) == expected


def test_atomic_dir_gets_the_umask_permissions_not_0700(tmp_path, umask):
    with atomic_dir(tmp_path / "backbone") as tmp:
        (tmp / "config.json").write_text("{}")
        # What save_pretrained does: write a 0600 temporary file, then rename it; and a 0700 temporary directory.
        fd, weights = tempfile.mkstemp(dir=tmp)
        os.close(fd)
        os.replace(weights, tmp / "model.safetensors")
        os.replace(tempfile.mkdtemp(dir=tmp), tmp / "shards")
        (tmp / "shards" / "part-1.safetensors").touch(mode=0o600)
    (tmp_path / "plain").mkdir()
    backbone = tmp_path / "backbone"
    assert mode(backbone) == mode(backbone / "shards") == mode(tmp_path / "plain") == 0o777 & ~umask  # 0755 at 022
    files = ("config.json", "model.safetensors", "shards/part-1.safetensors")
    assert {name: mode(backbone / name) for name in files} == dict.fromkeys(files, 0o666 & ~umask)
