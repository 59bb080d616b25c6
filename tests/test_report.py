"""Snakemake's own HTML report renders every table and figure wrapped in report(), with no extra code."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
from conftest import SWEEP, TARGETS, run_snakemake
from helpers_data import ranking_metrics

from slmrec.evaluate import split_metrics
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


def test_direct_inference_joins_the_layer_report(swept_demo):
    results = swept_demo / "results" / "demo"
    direct = json.loads((results / "teacher" / "direct_inference.json").read_text())
    deep = MetricsRow.read(results / "teacher" / "metrics.json")
    assert direct["teacher"] == deep.model == teacher_name(4)
    assert sorted(int(k) for k in direct["layers"]) == [*SWEEP, 4]
    # Read at its full depth, the teacher scores exactly as its own row.
    assert direct["layers"]["4"]["test"] == pytest.approx(
        {**deep.test, "seconds": direct["layers"]["4"]["test"]["seconds"]}
    )
    ranks = pl.read_parquet(results / "teacher" / "direct_inference.ranks.parquet")
    for layer, metrics in direct["layers"].items():
        of_layer = ranks.filter(pl.col("layer") == int(layer)).drop("layer")
        assert split_metrics(of_layer) == {s: ranking_metrics(m) for s, m in metrics.items()}
    report = (results / "report.md").read_text()
    assert "Direct inference reads the trained deep teacher" in report
    assert re.search(r"^\| 1 \|( [\d.]+ \|){4}$", report, re.M)  # both the trained E4SRec_1 and the read-out


def test_a_second_student_from_its_own_teacher(swept_demo):
    table = json.loads((swept_demo / "results" / "demo" / "metrics.json").read_text())
    rows = {row["target"]: row for row in table["rows"]}
    second = f"student_t{SWEEP[-1]}"
    assert {"teacher", "student", sweep_teacher(SWEEP[-1]), second} <= set(rows)
    assert rows[second]["model"] == f"SLMRec 2←{SWEEP[-1]}" and rows["student"]["model"] == "SLMRec 2←4"
    manifest = json.loads((swept_demo / "results" / "demo" / second / "manifest.json").read_text())
    assert f"results/demo/{sweep_teacher(SWEEP[-1])}/states.safetensors" in manifest["inputs"]
    # The headline speed-ups stay those of the first reported student over its own teacher.
    assert table["speedup"]["student"] == "SLMRec 2←4" and table["speedup"]["teacher"] == teacher_name(4)
