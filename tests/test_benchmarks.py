"""The GPU benchmark runs end to end on a CPU with a tiny shape, so it is known to work before a GPU is lent."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_config
from helpers_data import INTERVAL

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_efficiency.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_gpu_efficiency_smoke_on_a_tiny_shape():
    done = run(
        "--tiny", "--users", "12", "--eval-batch-size", "8", "--batch-size", "8", "--micro-batch", "4", "--steps", "1"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "Table 5 on" in out
    for model in ("E4SRec_8", "E4SRec_4", "SLMRec 2"):
        row = re.search(rf"^\s*{re.escape(model)}\s+on\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", out, flags=re.M)
        assert row, (model, out)
        trainable, step, _, users = row.groups()
        assert int(trainable.replace(",", "")) > 0 and float(step) > 0 and float(users) > 0
    # Two rows per model: with the prompt cache and without.
    assert len(re.findall(r"^\s+off\s", out, flags=re.M)) == 3
    speedups = re.search(r"Student \(2 layers\) over teacher \(8\): ([\d.]+)x training, ([\d.]+)x inference", out)
    assert speedups and all(float(x) > 0 for x in speedups.groups())
    assert "6.6x and 8.0x" in out
    assert re.search(r"8 layers: training [\d.]+%, inference [\d.]+%", out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the 7B shape would run")
def test_gpu_efficiency_without_a_gpu_says_how_to_smoke_test():
    done = run()
    assert done.returncode == 2
    assert "no CUDA device: run with --tiny" in done.stderr


@pytest.mark.parametrize(("budget_min", "returncode", "verdict"), [(10, 0, "PASS"), (0.001, 1, "FAIL")])
def test_demo_benchmark_times_a_fresh_copy_against_its_budget(tmp_path, budget_min, returncode, verdict):
    """A cheap target of the demo stands in for the whole DAG; `results/` of the checkout is not touched."""
    config = write_tiny_config(tmp_path)
    before = sorted(ROOT.glob("results/*/logs/*.benchmark.tsv"))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "demo.py"), "--budget-min", str(budget_min)]
        + ["--configfile", str(config), "results/demo/data/stats.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == returncode, done.stdout + done.stderr[-3000:]
    assert re.search(r"^  demo: synthesize\s+[\d.]+\s+[\d.]+$", done.stdout, flags=re.M), done.stdout
    assert re.search(r"^  demo: preprocess\s+[\d.]+\s+[\d.]+$", done.stdout, flags=re.M), done.stdout
    assert re.search(
        rf"demo wall time: [\d.]+ min, [\d.]+ of the {budget_min:g}-minute budget: {verdict}$", done.stdout
    )
    assert sorted(ROOT.glob("results/*/logs/*.benchmark.tsv")) == before


def test_demo_benchmark_names_a_missing_overlay(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "demo.py"), "--configfile", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"--configfile {tmp_path / 'nope.yaml'}: no such file" in done.stderr


@pytest.mark.e2e
def test_recommend_benchmark_smoke_on_the_tiny_demo(served_demo):
    """benchmarks/recommend.py on the tiny demo's trained student and teacher, a few users: every figure is there."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "recommend.py"), "--results", str(served_demo / "results")]
        + ["--dataset", "demo", "--users", "40", "--repeats", "1", "--resamples", "99", "--batch-size", "16"]
        + ["--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for model, target in (("SLMRec 2←4", "student"), ("E4SRec_4", "teacher")):
        assert re.search(rf"^\| {model} \| {target} \| [\d.]+ \|$", out, flags=re.M), out
    assert re.search(r"^SLMRec 2←4 over E4SRec_4: [\d.]+x users/s$", out, flags=re.M), out
    assert "## Exports of SLMRec 2←4 (student): 40 test users, top 20" in out
    assert re.search(r"^\| float32 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| \(reference\) \| 100\.0% \|$", out, flags=re.M)
    for variant in ("bf16", "int8", "4bit"):
        row = rf"^\| {variant} \| [\d.]+ \| [\d.]+ \| [\d.]+ \| {INTERVAL} \| [\d.]+% \|$"
        assert re.search(row, out, flags=re.M), (variant, out)
