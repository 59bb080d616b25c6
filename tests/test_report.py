"""Snakemake's own HTML report renders every table and figure wrapped in report(), with no extra code."""

from __future__ import annotations

import pytest
from conftest import TARGETS, run_snakemake

pytestmark = pytest.mark.e2e


def test_snakemake_html_report(finished_demo, tmp_path):
    html = tmp_path / "report.html"
    run_snakemake(finished_demo, *TARGETS, "--configfile", "tiny.yaml", "--report", str(html))
    text = html.read_text()
    for name in ("metrics.json", "report.md", "training_curves.png", "layer_sweep.png", "stats.json"):
        assert name in text, name
