"""End to end: the whole demo DAG, from synthetic reviews to results/demo/metrics.json and report.md."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import polars as pl
import pytest
from conftest import TARGETS, run_snakemake
from helpers_data import INTERVAL, ranking_metrics

from slmrec.evaluate import read_ranks, split_metrics
from slmrec.metrics import METRIC_NAMES, MetricsRow
from slmrec.targets import ABLATION_VARIANTS, KD_ROWS, LOSS_TERMS, PAPER_VARIANTS, TRAINED_VARIANTS, ablation_target

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

RULE_LOGS = (
    "synthesize",
    "preprocess",
    "negatives",
    "sasrec",
    "popularity",
    "backbone",
    "teacher",
    "teacher.states",
    "student",
    "ablation",
    "metrics",
    "report",
    "sasrec_student",
    *(f"ablation/{variant}" for variant in TRAINED_VARIANTS),
)


@pytest.fixture(scope="module")
def demo(finished_demo):
    """The tiny demo DAG (conftest), run once per session, and the options it was run with."""
    return finished_demo, ("--configfile", "tiny.yaml")


@pytest.mark.e2e
def test_metrics_table(demo):
    workflow, _ = demo
    results = workflow / "results" / "demo"
    table = json.loads((results / "metrics.json").read_text())
    assert table["dataset"] == "demo"
    assert 200 < table["stats"]["users"] <= 300
    rows = {row["target"]: row for row in table["rows"]}
    assert set(rows) == {"popularity", "sasrec", "teacher", "student", "sasrec_student"}
    assert rows["sasrec_student"]["model"] == "SASRec ← E4SRec_4 (logits KD + rank KD)"
    for stage, row in rows.items():
        assert MetricsRow(**row).test.keys() >= set(METRIC_NAMES), stage  # percentages, checked on construction
        assert set(row["params"]) >= {"total", "trainable", "inference"}, stage
        assert row["params"]["total"] >= row["params"]["trainable"] >= 0, stage
        assert row["params"]["inference"] > 0 or stage == "popularity", stage
        assert row["train_seconds"] >= 0 and row["inference_seconds"] > 0, stage
    assert rows["teacher"]["layers"] == 4 and rows["student"]["layers"] == 2
    assert rows["student"]["params"]["inference"] < rows["teacher"]["params"]["inference"]
    speedup = table["speedup"]
    assert speedup["train"] > 0 and speedup["inference"] > 0
    assert speedup["teacher"] == rows["teacher"]["model"] and speedup["student"] == rows["student"]["model"]
    assert speedup["train"] == pytest.approx(rows["teacher"]["train_seconds"] / rows["student"]["train_seconds"])


@pytest.mark.e2e
def test_report_and_figures(demo):
    workflow, _ = demo
    results = workflow / "results" / "demo"
    report = (results / "report.md").read_text()
    assert "randomly initialised" in report
    assert "nothing about the value of LLM pretraining" in report
    assert "training_curves.png" in report and "layer_sweep.png" in report
    assert "Ablation" in report
    # The settings it was made with: the tiny config's K and layers, the schema's λ.
    assert "1 positive + 99 stored negatives" in report
    for key, value in [("distill.l2_weight", "0.1"), ("teacher.layers", "4"), ("student.layers", "2")]:
        assert f"| `{key}` | `{value}` |" in report, key
    # The times come from the optimised paths, and the report says which.
    assert "Times are measured on the optimised paths" in report
    assert re.search(
        r"^- SLMRec \d+←\d+: shared-prompt KV cache, length-bucketed inference, cached teacher states$", report, re.M
    )
    assert re.search(r"^- E4SRec_\d+: shared-prompt KV cache, length-bucketed inference$", report, re.M)
    # The student against its CE-only twin and its teacher, user by user, from their ranks.
    assert "## Paired comparisons (per user)" in report
    for other in ("CE", "E4SRec_4"):
        line = rf"^\| SLMRec 2←4 − {other}[^|]* \| 1 × \d+ \| {INTERVAL} \|"
        assert re.search(line, report, re.M), other
    for name in ("training_curves.png", "layer_sweep.png"):
        data = (results / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name


@pytest.mark.e2e
def test_ablation_and_student_artifacts(demo):
    workflow, _ = demo
    results = workflow / "results" / "demo"
    ablation = json.loads((results / "ablation" / "metrics.json").read_text())
    variants = {row["variant"]: row for row in ablation["rows"]}
    assert list(variants) == [*PAPER_VARIANTS, *(v for v in KD_ROWS if v not in PAPER_VARIANTS)]
    for variant, row in variants.items():
        if row["distill"] is None:  # plain SASRec: no distillation at all
            assert variant == "sasrec"
            continue
        kept = set(ABLATION_VARIANTS[variant].terms)
        for term in LOSS_TERMS:
            if term.weight_key in row["distill"]:  # SASRec's rows have no hidden-state terms
                assert (row["distill"][term.weight_key] > 0) == (term.name in kept), (variant, term)
    assert variants["sasrec"]["trained_as"] == "SASRec"  # plain SASRec is the sasrec run itself
    for variant in ("sasrec_logits", "sasrec_rank"):
        manifest = json.loads((results / "ablation" / variant / "manifest.json").read_text())
        assert "results/demo/teacher/states.safetensors" in manifest["inputs"], variant
        assert "results/demo/teacher/trainable.safetensors" in manifest["inputs"], variant  # its output projection
        assert not any("backbone" in path for path in manifest["inputs"]), variant  # never the LLM
    # No model is trained twice: the variant with every term is the offline student's row.
    student = MetricsRow.read(results / "student" / "metrics.json")
    assert variants["all"]["test"] == student.test and variants["all"]["trained_as"] == student.model
    assert not (results / "ablation" / "all").exists()

    student_log = pl.read_csv(results / "student" / "train_log.csv")
    assert {"loss_ce", "loss_cos", "loss_l2", "loss_ms"} <= set(student_log.columns)
    ce_log = pl.read_csv(results / "ablation" / "ce" / "train_log.csv")
    assert {c for c in ce_log.columns if c.startswith("loss")} == {"loss", "loss_ce"}
    for stage in ("teacher", "student"):
        manifest = json.loads((results / stage / "manifest.json").read_text())
        assert manifest["stage"] == stage
    student_manifest = json.loads((results / "student" / "manifest.json").read_text())
    # The students read the teacher's cached states, computed once, never the teacher itself.
    assert "results/demo/teacher/states.safetensors" in student_manifest["inputs"]
    assert "results/demo/teacher/trainable.safetensors" not in student_manifest["inputs"]
    assert student_manifest["config"]["distill"]["blocks"] == 2
    states_manifest = json.loads((results / "teacher" / "states.manifest.json").read_text())
    assert "results/demo/teacher/trainable.safetensors" in states_manifest["inputs"]
    for variant in ("ce_cos", "ce_cos_l2", "ce_cos_ms"):
        manifest = json.loads((results / "ablation" / variant / "manifest.json").read_text())
        assert "results/demo/teacher/states.safetensors" in manifest["inputs"], variant
    assert MetricsRow.read(results / "student" / "metrics.json").details["teacher_states"] == "cached"


@pytest.mark.e2e
def test_every_rule_has_log_and_benchmark(demo):
    workflow, options = demo
    logs = workflow / "results" / "demo" / "logs"
    for rule in RULE_LOGS:
        assert (logs / f"{rule}.log").is_file(), rule
        assert (logs / f"{rule}.benchmark.tsv").is_file(), rule
    # The LLM rules log their training progress.
    for rule in ("teacher", "student"):
        text = (logs / f"{rule}.log").read_text()
        assert "valid MRR" in text, text[-2000:]
    # Everything is up to date: a second run has nothing to do.
    dry = run_snakemake(workflow, "-n", *TARGETS, *options)
    assert "Nothing to be done" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]


@pytest.mark.e2e
def test_every_metrics_file_is_one_typed_row(demo):
    """Every stage writes a complete MetricsRow, and the table holds exactly those rows."""
    workflow, _ = demo
    results = workflow / "results" / "demo"
    table = json.loads((results / "metrics.json").read_text())
    targets = [
        "popularity",
        "sasrec",
        "teacher",
        "student",
        "sasrec_student",
        *(ablation_target(v) for v in TRAINED_VARIANTS),
    ]
    for target in targets:
        row = MetricsRow.read(results / target / "metrics.json")
        assert row.target == target
    for row in table["rows"]:
        assert MetricsRow(**row) == MetricsRow.read(results / row["target"] / "metrics.json")


@pytest.mark.e2e
def test_every_model_has_per_user_ranks_that_give_its_metrics(demo):
    """Each evaluated model's ranks.parquet holds every user of both splits, and its metrics.json is exactly
    the ranks' metrics."""
    workflow, _ = demo
    results = workflow / "results" / "demo"
    users = pl.read_parquet(results / "data" / "splits.parquet")["user"].to_list()
    for row in json.loads((results / "metrics.json").read_text())["rows"]:
        ranks = read_ranks(results / row["target"] / "ranks.parquet")
        for split, metrics in split_metrics(ranks).items():
            assert ranks.filter(pl.col("split") == split)["user"].to_list() == users
            assert metrics == ranking_metrics(row[split]), (row["target"], split)


@pytest.mark.e2e
def test_compare_paired_prints_every_metric_with_its_interval(demo):
    """`python -m slmrec compare demo --paired student ablation/ce`: the student against its CE-only twin."""
    workflow, _ = demo
    command = [sys.executable, "-m", "slmrec", "compare", "demo", "--paired", "student", "ablation/ce"]
    proc = subprocess.run(command, cwd=workflow, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "## student − ablation/ce, per user, on the stored candidates: 1 seed (demo)" in proc.stdout
    for metric in METRIC_NAMES:
        assert re.search(
            rf"^\| {re.escape(metric)} \| {INTERVAL} \| {INTERVAL} \| (holds|reversed|not disting)", proc.stdout, re.M
        )
    missing = subprocess.run([*command[:-1], "teacher_l3"], cwd=workflow, capture_output=True, text=True)
    assert missing.returncode == 2
    assert "results/demo/teacher_l3/ranks.parquet does not exist; make it first: snakemake" in missing.stderr
