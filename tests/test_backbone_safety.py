"""A configured backbone is untrusted input: it never runs its own code, never names a directory outside
results/backbones/, fails early naming the setting when it is missing or incomplete, and a killed conversion's
leftovers are cleaned up by the next run without touching a live job's."""

from __future__ import annotations

import json
import logging
import os
import platform
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_snakemake, write_tiny_config
from helpers_data import stage_call
from helpers_gguf import tiny_llama

from slmrec.errors import BackboneError
from slmrec.io import atomic_dir
from slmrec.models.llmrec import load_backbone
from slmrec.models.presets import TOKENIZER_FILES

# Loads a backbone the way the stages do, with "y\n" waiting on stdin, and prints what each loader raised.
LOADERS = """
import sys
from slmrec.models import conversion, llmrec
source, out, checked = sys.argv[1], sys.argv[2], sys.argv[3] == "checked"
if not checked:  # the up-front refusal off: what is left is trust_remote_code=False
    conversion.check_backbone = llmrec.check_backbone = lambda *args, **kwargs: None
loaders = (
    lambda: llmrec.load_backbone(source, 1, "float32", "none"),
    lambda: conversion.convert(source, out, "random", 0),
)
for load in loaders:
    try:
        load()
    except Exception as err:
        print(f"{type(err).__name__}: {err}".splitlines()[0])
"""


def custom_code_backbone(root: Path, auto_map_in: str, marker: Path) -> Path:
    """A checkpoint of an architecture transformers does not know, whose `auto_map` (in `auto_map_in`) points at a
    Python file of the directory that writes `marker` when it is imported."""
    directory = root / "custom-backbone"
    directory.mkdir()
    (directory / "custom_model.py").write_text(
        f"from pathlib import Path\n\nPath({str(marker)!r}).write_text('the custom code ran')\n"
    )
    files = {
        "config.json": {"model_type": "custom-net", "num_hidden_layers": 8},
        "tokenizer_config.json": {"tokenizer_class": "CustomTokenizer"},
    }
    files[auto_map_in]["auto_map"] = (
        {"AutoConfig": "custom_model.CustomConfig", "AutoModel": "custom_model.CustomModel"}
        if auto_map_in == "config.json"
        else {"AutoTokenizer": ["custom_model.CustomTokenizer", None]}
    )
    for name, content in files.items():
        (directory / name).write_text(json.dumps(content))
    return directory


def run_loaders(tmp_path: Path, source: Path, checked: bool) -> subprocess.CompletedProcess[str]:
    """The loaders in a fresh process whose stdin says yes to any question, with a private Hugging Face cache."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-c", LOADERS, str(source), str(tmp_path / "out"), "checked" if checked else "unchecked"]
    return subprocess.run(argv, input="y\n", capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)


@pytest.mark.parametrize("auto_map_in", ["config.json", "tokenizer_config.json"])
def test_a_backbone_with_custom_code_is_refused_and_its_code_never_runs(tmp_path, auto_map_in):
    marker = tmp_path / "custom-code-ran"
    source = custom_code_backbone(tmp_path, auto_map_in, marker)
    proc = run_loaders(tmp_path, source, checked=True)
    expected = (
        f"BackboneError: backbone.path: {source / auto_map_in} has an auto_map, and transformers does not know "
        "model_type 'custom-net': loading it would run Python code from the checkpoint directory"
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith(expected) for line in lines), proc.stdout + proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("auto_map_in", ["config.json", "tokenizer_config.json"])
def test_without_the_refusal_transformers_is_still_told_not_to_run_custom_code(tmp_path, auto_map_in):
    marker = tmp_path / "custom-code-ran"
    proc = run_loaders(tmp_path, custom_code_backbone(tmp_path, auto_map_in, marker), checked=False)
    assert "Do you wish to run the custom code?" not in proc.stdout + proc.stderr
    assert len(proc.stdout.splitlines()) == 2, proc.stdout + proc.stderr  # both loaders failed
    assert not marker.exists()


def test_a_stage_job_reads_no_stdin(tmp_path):
    """run_stage gives the stage /dev/null for stdin, whatever the job inherited (`yes y | snakemake ...`)."""
    script = """
import os, sys
from types import SimpleNamespace
from slmrec import workflow

def launch(call, **options):
    print(repr(sys.stdin.read()), repr(os.read(0, 16)), file=sys.__stdout__)

workflow.launch = launch
snakemake = SimpleNamespace(
    input={}, output={}, params={}, resources={}, log=["stage.log"], rule="convert_backbone", wildcards={}
)
workflow.run_stage(snakemake)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], input="y\ny\n", capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["'' b''"]


# --- backbone.path checked as the DAG is built ------------------------------------------------------------------

CONFIG = ("--configfile", "tiny.yaml")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny LLaMA checkpoint directory with its tokenizer."""
    directory = tmp_path_factory.mktemp("checkpoint") / "tiny-llama"
    model, tokenizer = tiny_llama(seed=0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def without_tokenizer(checkpoint: Path, root: Path) -> Path:
    directory = root / "no-tokenizer"
    directory.mkdir()
    for name in ("config.json", "model.safetensors"):
        (directory / name).write_bytes((checkpoint / name).read_bytes())
    return directory


def test_a_checkpoint_without_a_tokenizer_says_the_tokenizer_is_missing(checkpoint, tmp_path):
    directory = without_tokenizer(checkpoint, tmp_path)
    with pytest.raises(BackboneError) as err:
        load_backbone(directory, 2, "float32", "none")
    assert str(err.value) == (
        f"backbone.path: {directory} has no tokenizer: expected {' or '.join(TOKENIZER_FILES)} (with merges.txt) "
        "beside config.json; copy the tokenizer files of the same model there"
    )
    assert "sentencepiece" not in str(err.value)


@pytest.mark.parametrize("case", ["missing directory", "missing gguf", "no tokenizer", "custom code"])
def test_a_bad_backbone_path_fails_only_its_own_datasets_targets_naming_the_key(checkpoint, workflow, case):
    models = workflow / "models"
    models.mkdir()
    paths = {
        "missing directory": lambda: models / "Llama-2-7b-hf",
        "missing gguf": lambda: models / "model.Q4_0.gguf",
        "no tokenizer": lambda: without_tokenizer(checkpoint, models),
        "custom code": lambda: custom_code_backbone(models, "config.json", models / "custom-code-ran"),
    }
    path = paths[case]()
    other = {"source": {"kind": "synthetic", "users": 300, "items": 300, "seed": 8}}
    write_tiny_config(workflow, {"datasets": {"demo": {"backbone": {"path": str(path)}}, "other": other}})
    run_snakemake(workflow, "-n", "results/other/teacher/metrics.json", "results/demo/sasrec/metrics.json", *CONFIG)
    proc = run_snakemake(workflow, "-n", "results/demo/teacher/metrics.json", *CONFIG, check=False)
    assert proc.returncode != 0
    assert f"BackboneError: datasets.demo.backbone.path: {path}" in proc.stdout + proc.stderr
    assert not (models / "custom-code-ran").exists()


# --- names and directories: nothing outside the artifact is replaced -------------------------------------------


@pytest.mark.parametrize(("file", "name"), [("...gguf", ".."), ("..gguf", "."), ("a\\b.gguf", "a\\b")])
def test_a_gguf_name_that_is_no_directory_name_is_refused_and_results_survive(workflow, file, name):
    gguf = workflow / "models" / file
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    kept = workflow / "results" / "demo" / "data" / "stats.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}")
    write_tiny_config(workflow, {"datasets": {"demo": {"backbone": {"path": str(gguf)}}}})
    proc = run_snakemake(workflow, *CONFIG, check=False)
    assert proc.returncode != 0
    assert (
        f"datasets.demo.backbone.path: {str(gguf)!r} gives the directory name {name!r}, which is not a plain name"
    ) in proc.stdout + proc.stderr
    assert kept.read_text() == "{}"


@pytest.mark.parametrize("name", ["..", ".", "escape"])
def test_atomic_dir_replaces_nothing_but_an_entry_of_its_parent(tmp_path, name):
    """`results/backbones/..` is results/ itself; `escape` is a symbolic link to a directory elsewhere."""
    kept = tmp_path / "results" / "toys" / "metrics.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "weights.safetensors").write_text("not ours")
    backbones = tmp_path / "results" / "backbones"
    backbones.mkdir()
    (backbones / "escape").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="refusing to replace .*: it is not an entry strictly inside its parent"):
        with atomic_dir(f"{backbones}/{name}") as tmp:
            (tmp / "config.json").write_text("{}")
    assert kept.read_text() == "{}" and (elsewhere / "weights.safetensors").read_text() == "not ours"
    assert [p.name for p in backbones.iterdir()] == ["escape"]  # no temporary directory either


# --- a killed conversion -----------------------------------------------------------------------------------------

KILLED_WRITER = """
import sys, time
from slmrec.io import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    (tmp / "model.safetensors").write_bytes(b"half a model")
    print(tmp, flush=True)
    time.sleep(600)
"""


def test_a_killed_conversions_leftover_is_removed_by_the_next_run_and_nothing_else(checkpoint, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="slmrec.io")
    out = tmp_path / "results" / "backbones" / "tiny-llama-random0"
    killed = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out)], stdout=subprocess.PIPE, text=True)
    leftover = Path(killed.stdout.readline().strip())
    killed.kill()
    killed.wait()
    killed.stdout.close()
    assert leftover.is_dir() and leftover.parent == out.parent and leftover.name.startswith(f".{out.name}.")
    host = platform.node()
    kept = [
        out.parent / f".{out.name}.{os.getpid()}@{host}.live0job",  # a live process's: this test's own pid
        out.parent / f".{out.name}.{killed.pid}@elsewhere.example.org.xyz12345",  # another host's
        out.parent / f".{out.name}-other.{killed.pid}@{host}.abc12345",  # another output's
    ]
    for directory in kept:
        directory.mkdir()

    old_umask = os.umask(0o022)
    try:
        from slmrec.stages import convert_backbone

        output, params = SimpleNamespace(directory=out), {"init": "random", "seed": 0}
        convert_backbone.run(stage_call("convert_backbone", {"source": checkpoint}, output, params))
    finally:
        os.umask(old_umask)

    assert not leftover.exists()
    assert all(directory.is_dir() for directory in kept)
    assert f"removing {leftover}, left by a killed run (pid {killed.pid})" in caplog.text
    assert f"kept {kept[1]}, left by pid {killed.pid} on host elsewhere.example.org" in caplog.text
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, *(d.name for d in kept)])
    # save_pretrained writes through 0600 temporary files: the artifact has the umask's permissions all the same.
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.iterdir()]}
    assert modes == {name: 0o755 if name == out.name else 0o644 for name in modes}
    assert "model.safetensors" in modes
