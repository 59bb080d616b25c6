"""Snakemake's own HTML report renders every table and figure wrapped in report(), with no extra code."""

from __future__ import annotations

import json

import pytest
from conftest import SWEEP, TARGETS, run_snakemake

from slmrec.metrics import MetricsRow
from slmrec.targets import sweep_teacher, teacher_name

pytestmark = pytest.mark.e2e


def test_snakemake_html_report(finished_demo, tmp_path):
    html = tmp_path / "report.html"
    run_snakemake(finished_demo, *TARGETS, "--configfile", "tiny.yaml", "--report", str(html))
    text = html.read_text()
    for name in ("metrics.json", "report.md", "training_curves.png", "layer_sweep.png", "stats.json"):
        assert name in text, name


def test_layer_sweep_trains_e4srec_l_and_plots_them(swept_demo):
    results = swept_demo / "results" / "demo"
    for layers in SWEEP:
        row = MetricsRow.read(results / sweep_teacher(layers) / "metrics.json")
        assert row.layers == layers and row.model == teacher_name(layers) and row.target == sweep_teacher(layers)
    manifest = json.loads((results / sweep_teacher(1) / "manifest.json").read_text())
    assert manifest["config"]["layers"] == 1 and "layers" not in manifest["config"]["teacher"]
    assert (results / "layer_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
