"""Versioned artifacts: every stage's manifest, and `python -m slmrec provenance` over the chain."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import write_tiny_config

pytestmark = pytest.mark.e2e

STAGE_MANIFESTS = {
    "synthesize": "raw/synthetic_5.json.gz.manifest.json",
    "preprocess": "data/manifest.json",
    "negatives": "data/negatives.manifest.json",
    "sasrec": "sasrec/manifest.json",
    "popularity": "popularity/manifest.json",
    "teacher": "teacher/manifest.json",
    "student": "student/manifest.json",
    "sasrec_student": "sasrec_student/manifest.json",
    "metrics": "manifest.json",
}


def provenance(workdir, target="results/demo/metrics.json", *options):
    return subprocess.run(
        [sys.executable, "-m", "slmrec", "provenance", target, *options], cwd=workdir, capture_output=True, text=True
    )


@pytest.fixture
def demo_copy(finished_demo, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished_demo, workdir, symlinks=True)
    return workdir


@pytest.mark.parametrize("stage", sorted(STAGE_MANIFESTS))
def test_every_stage_writes_a_complete_manifest(finished_demo, stage):
    manifest = json.loads((finished_demo / "results" / "demo" / STAGE_MANIFESTS[stage]).read_text())
    assert manifest["stage"] == stage
    assert manifest["schema_version"] == 1
    assert isinstance(manifest["config"], dict) and manifest["config"]
    for name in ("torch", "transformers", "peft", "polars"):
        assert manifest["packages"][name]
    assert set(manifest["code"]) == {"commit", "dirty"}
    assert manifest["host"] and manifest["started"] <= manifest["finished"]
    for digest in [*manifest["inputs"].values(), *manifest["outputs"].values()]:
        assert len(digest) == 64
    assert manifest["outputs"], "a manifest records the checksums of what it describes"
    # What it was made for, so that a copy in another dataset's or target's place is told apart.
    assert manifest["made_for"]["manifest"] == f"results/demo/{STAGE_MANIFESTS[stage]}"
    assert manifest["made_for"]["wildcards"]["dataset"] == "demo"


def test_provenance_prints_the_chain_behind_a_result(finished_demo):
    proc = provenance(finished_demo, "results/demo/metrics.json", "--configfile", "tiny.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for stage in ("metrics", "student", "sasrec_student", "teacher", "sasrec", "negatives", "preprocess", "synthesize"):
        assert f"made by stage '{stage}'" in proc.stdout
    assert "up to date" in proc.stdout
    # Under the config that made them, no recorded setting differs (an ablation variant's switched-off terms
    # are what its target trains with, not a change).
    assert "~" not in proc.stdout and "CHANGED" not in proc.stdout
    ablation = provenance(finished_demo, "results/demo/ablation/metrics.json", "--configfile", "tiny.yaml")
    assert "made by stage 'student'" in ablation.stdout and "~" not in ablation.stdout, ablation.stdout


def test_provenance_shows_the_settings_changed_since(demo_copy):
    write_tiny_config(demo_copy, {"distill": {"l2_weight": 0.5}, "datasets": {"demo": {"teacher": {"layers": 2}}}})
    proc = provenance(demo_copy, "results/demo/metrics.json", "--configfile", "tiny.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # every checksum still matches
    changes = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("~")]
    assert sorted(set(changes)) == ["~ distill.l2_weight: recorded 0.1, now 0.5", "~ teacher.layers: recorded 4, now 2"]
    assert "CHANGED: " in proc.stdout and "tiny.yaml" in proc.stdout


def test_provenance_takes_several_configfiles_as_snakemake_does(demo_copy):
    (demo_copy / "extra.yaml").write_text("distill: {l2_weight: 0.5}\n")
    proc = provenance(demo_copy, "results/demo/metrics.json", "--configfile", "tiny.yaml", "extra.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "~ distill.l2_weight: recorded 0.1, now 0.5" in proc.stdout
    assert "config.yaml + tiny.yaml + extra.yaml" in proc.stdout


def test_provenance_flags_a_stale_input(demo_copy):
    splits = demo_copy / "results" / "demo" / "data" / "splits.parquet"
    splits.write_bytes(splits.read_bytes() + b"\0")
    proc = provenance(demo_copy)
    assert proc.returncode == 1
    assert "data/splits.parquet changed since it was recorded" in proc.stdout
    assert "STALE" in proc.stdout


def test_provenance_of_an_unknown_file_is_an_error(finished_demo):
    proc = provenance(finished_demo, "results/demo/nothing.json")
    assert proc.returncode == 2
    assert "no manifest" in proc.stderr
