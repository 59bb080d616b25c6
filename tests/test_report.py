"""Snakemake's own HTML report renders every table and figure wrapped in report(), with no extra code."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import TARGETS, run_snakemake, write_tiny_config

pytestmark = pytest.mark.e2e


def test_snakemake_html_report(finished_demo, tmp_path):
    html = tmp_path / "report.html"
    run_snakemake(finished_demo, *TARGETS, "--configfile", "tiny.yaml", "--report", str(html))
    text = html.read_text()
    for name in ("metrics.json", "report.md", "training_curves.png", "layer_sweep.png", "stats.json"):
        assert name in text, name


def test_layer_sweep_trains_e4srec_l_and_plots_them(finished_demo, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished_demo, workdir, symlinks=True)
    write_tiny_config(workdir, {"datasets": {"demo": {"report": {"layer_sweep": [1, 2]}}}})
    run_snakemake(workdir, *TARGETS, "--configfile", "tiny.yaml")
    for layers in (1, 2):
        metrics = json.loads((workdir / f"results/demo/teacher_l{layers}/metrics.json").read_text())
        assert metrics["layers"] == layers and metrics["model"] == f"E4SRec_{layers}"
    manifest = json.loads((workdir / "results/demo/teacher_l1/manifest.json").read_text())
    assert manifest["config"]["layers"] == 1
    assert (workdir / "results/demo/layer_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
