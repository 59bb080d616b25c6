"""The committed experiment overlay (experiments/ml100k_smollm2.yaml): its seeds and its documented command."""

from __future__ import annotations

import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from itertools import combinations

import pytest
import yaml
from conftest import ROOT, SNAKEMAKE, copy_workflow, expand_braces, installed_smollm2_wheel

from slmrec.config import load_config, load_schema, stage_config

OVERLAY = ROOT / "experiments" / "ml100k_smollm2.yaml"
SEEDS = ("", "_s2", "_s3")
# E4SRec_2 with ten targets per user: its steps, by probe dataset, and the seeds of the long one
PROBES = {"ml100k_targets10": 200, **{f"ml100k_targets10_long{s}": 600 for s in SEEDS}}
# Seed 2's chain with both its students (SLMRec 4←24 and CE-only) trained 400 steps, not 200
STUDENTS_PROBE = "ml100k_s2_students400"
ARMS = {"pretrained": tuple(f"ml100k{s}" for s in SEEDS), "random": tuple(f"ml100k_random{s}" for s in SEEDS)}


def documented_command() -> list[str]:
    """The snakemake command of docs/experiments.md's "How to regenerate", as words, braces expanded."""
    doc = (ROOT / "docs" / "experiments.md").read_text()
    block = re.search(r"```bash\n(.*?)```", doc[doc.index("## How to regenerate") :], flags=re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    (command,) = [line.split("#")[0] for line in lines if "/snakemake " in line]
    return [expanded for word in shlex.split(command) for expanded in expand_braces(word)]


def test_every_seed_of_an_arm_differs_in_each_trained_stage():
    config = load_config([ROOT / "config.yaml", OVERLAY])
    schema = load_schema(ROOT / "config.schema.yaml")
    for arm, datasets in ARMS.items():
        for stage in ("sasrec", "teacher", "student"):
            seeds = [stage_config(config, schema, d, stage)["seed"] for d in datasets]
            assert len(set(seeds)) == len(seeds), (arm, stage, seeds)
        assert [stage_config(config, schema, d, "teacher")["layers"] for d in datasets] == [24, 24, 24], arm
        for a, b in combinations(datasets, 2):  # otherwise the same chain
            for stage in ("source", "preprocess", "negatives"):
                assert stage_config(config, schema, a, stage) == stage_config(config, schema, b, stage), stage
    for probe, steps in PROBES.items():  # that seed's chain, E4SRec_2 but for the targets (and the length)
        chain = "ml100k" + next((s for s in SEEDS if s and probe.endswith(s)), "")
        changed = {"layers": 2, "targets_per_user": 10, "max_steps": steps, "eval_steps": 25 if steps == 200 else 50}
        expected = {**stage_config(config, schema, chain, "teacher"), **changed}
        assert stage_config(config, schema, probe, "teacher") == expected, probe
        assert stage_config(config, schema, probe, "sasrec") == stage_config(config, schema, chain, "sasrec"), probe
    for stage in ("source", "preprocess", "negatives", "backbone", "sasrec", "teacher", "distill"):
        assert stage_config(config, schema, STUDENTS_PROBE, stage) == stage_config(config, schema, "ml100k_s2", stage)
    seed2_student = stage_config(config, schema, "ml100k_s2", "student")
    assert stage_config(config, schema, STUDENTS_PROBE, "student") == {**seed2_student, "max_steps": 400}
    assert seed2_student["max_steps"] == 200
    random_inits = [stage_config(config, schema, d, "backbone") for d in ARMS["random"]]
    assert {b["init"] for b in random_inits} == {"random"}
    assert len({b["seed"] for b in random_inits}) == 3


@pytest.mark.e2e
def test_the_documented_command_builds_each_arm_and_the_seeds_ce_students(tmp_path):
    """The command of docs/experiments.md dry-runs on a small ml-100k file: seed 1 has the sweep and every
    ablation student; seeds 2 and 3 have both students, E4SRec_8 and the CE-only student, and no other ablation."""
    words = documented_command()
    assert words[0].endswith("snakemake") and words[words.index("--configfile") + 1] == str(OVERLAY.relative_to(ROOT))
    (tmp_path / "run").mkdir()
    workdir = copy_workflow(tmp_path / "run")
    (workdir / "experiments").mkdir()
    (workdir / "experiments" / OVERLAY.name).write_text(OVERLAY.read_text())
    inter = workdir / yaml.safe_load(OVERLAY.read_text())["datasets"]["ml100k"]["source"]["path"]
    inter.parent.mkdir(parents=True)
    inter.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t5\t1\n")
    env = {**os.environ, "PYTHONPATH": str(installed_smollm2_wheel(tmp_path / "site"))}
    proc = subprocess.run(
        [SNAKEMAKE, "-n", *words[1:]], cwd=workdir, capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    outputs = {
        path.strip() for line in re.findall(r"^\s+output: (.*)$", proc.stdout, flags=re.M) for path in line.split(",")
    }
    assert {f"results/ml100k/teacher_l{n}/metrics.json" for n in (1, 2, 4, 8, 16)} <= outputs
    assert {f"results/ml100k/ablation/{v}/metrics.json" for v in ("ce", "ce_cos", "ce_cos_l2", "ce_cos_ms")} <= outputs
    for probe in PROBES:
        probed = {path for path in outputs if path.startswith(f"results/{probe}/") and path.endswith("metrics.json")}
        assert probed == {f"results/{probe}/{t}/metrics.json" for t in ("sasrec", "teacher")}  # no student, no sweep
    probed = {
        path for path in outputs if path.startswith(f"results/{STUDENTS_PROBE}/") and path.endswith("metrics.json")
    }
    assert probed == {
        f"results/{STUDENTS_PROBE}/{t}/metrics.json" for t in ("sasrec", "teacher", "student", "ablation/ce")
    }
    for dataset in (*ARMS["pretrained"][1:], *ARMS["random"]):
        made = {path for path in outputs if path.startswith(f"results/{dataset}/") and path.endswith("metrics.json")}
        expected = {f"results/{dataset}/{t}/metrics.json" for t in ("popularity", "sasrec", "teacher", "student")}
        if dataset in ARMS["pretrained"]:  # and SLMRec 4←8 with its teacher, E4SRec_8
            expected |= {f"results/{dataset}/{t}/metrics.json" for t in ("ablation/ce", "teacher_l8", "student_t8")}
        assert made == expected | {f"results/{dataset}/metrics.json"}, dataset


@pytest.mark.e2e
def test_alignment_puts_distilled_students_closer_to_their_teacher_than_the_ce_control(
    finished_demo, tmp_path, monkeypatch
):
    """experiments/alignment.py on the tiny demo: every student distilled with the cosine term sits closer to
    the teacher's states than the untrained student and the CE-only one, which learned without it."""
    out = tmp_path / "alignment.json"
    monkeypatch.chdir(finished_demo)  # as documented: run where the results were computed
    monkeypatch.setattr(sys, "argv", ["alignment.py", "--dataset", "demo", "--out", str(out)])
    runpy.run_path(str(ROOT / "experiments" / "alignment.py"), run_name="__main__")
    (teacher,) = json.loads(out.read_text())["teachers"].values()
    assert teacher["teacher_layers"] == 4
    cos = {row["model"]: sum(b["cos_distance"] for b in row["blocks"]) for row in teacher["rows"]}
    controls = {"untrained 2-layer student", "SLMRec_ce 2"}
    distilled = {"SLMRec 2←4", "SLMRec_ce_cos 2←4", "SLMRec_ce_cos_l2 2←4", "SLMRec_ce_cos_ms 2←4"}
    # The score-distilled LLM students are measured too; no term of theirs pulls the states together.
    scores = {f"SLMRec_{v} 2←4" for v in ("ce_logits", "ce_rank", "init_ce", "init_logits", "init_rank")}
    assert set(cos) == controls | distilled | scores
    assert max(cos[m] for m in distilled) < min(cos[m] for m in controls)
    assert not list((finished_demo / "results" / "demo").glob("alignment.json"))  # --out: the demo is untouched


@pytest.mark.e2e
def test_rescore_gives_a_finished_runs_ranks_back_and_counts_the_users_that_moved(finished_demo, monkeypatch, capsys):
    """experiments/rescore.py on the tiny demo: SASRec and the LLM student score as when they ran (exit 0); ranks
    that differ are counted by split."""
    monkeypatch.chdir(finished_demo)  # as documented: run where the results were computed
    monkeypatch.setattr(sys, "argv", ["rescore.py", "--dataset", "demo", "sasrec", "student"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / "experiments" / "rescore.py"), run_name="__main__")
    assert stop.value.code == 0
    assert capsys.readouterr().out.splitlines() == ["sasrec: the same ranks", "student: the same ranks"]
    import polars as pl

    moved_users = runpy.run_path(str(ROOT / "experiments" / "rescore.py"))["moved_users"]
    ranks = pl.read_parquet(finished_demo / "results" / "demo" / "student" / "ranks.parquet")
    assert moved_users(ranks, ranks) == {}
    shifted = ranks.with_columns(
        pl.when((pl.col("split") == "test") & (pl.col("user") <= 3)).then(pl.col("rank") + 1).otherwise("rank")
    )
    assert moved_users(shifted, ranks) == {"test": 3}


def test_summarize_fills_every_block_of_the_page_even_before_any_result(tmp_path, monkeypatch):
    doc = tmp_path / "experiments.md"
    doc.write_text((ROOT / "docs" / "experiments.md").read_text())
    monkeypatch.setattr(sys, "argv", ["summarize.py", "--results", str(tmp_path / "none"), "--doc", str(doc)])
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))  # as `python experiments/summarize.py` has it
    runpy.run_path(str(ROOT / "experiments" / "summarize.py"), run_name="__main__")
    text = doc.read_text()
    assert "not run yet" in text and "not drawn yet" in text and "not measured yet" in text
    assert "## Verdicts" in text  # the prose is kept


def test_alignment_names_the_missing_results_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["alignment.py", "--dataset", "nope"])
    with pytest.raises(SystemExit, match=r"results/nope: no finished dataset there .*pass --results and --dataset"):
        runpy.run_path(str(ROOT / "experiments" / "alignment.py"), run_name="__main__")


PRECISION_OVERLAY = ROOT / "experiments" / "ml100k_precision.yaml"


def test_the_precision_arms_differ_in_precision_alone_and_pair_by_seed():
    """Each seed's float32 and bf16 arms are the same chain (so the same data, negatives and SASRec table) but
    for `backbone.precision`; the seeds differ; E4SRec_8 is the paper overlay's."""
    config = load_config([ROOT / "config.yaml", PRECISION_OVERLAY])
    schema = load_schema(ROOT / "config.schema.yaml")
    paper = load_config([ROOT / "config.yaml", OVERLAY])
    stages = ("source", "preprocess", "negatives", "evaluate", "sasrec", "prompt", "teacher")
    for seed in SEEDS:
        fp32, bf16 = f"ml100k_fp32{seed}", f"ml100k_bf16{seed}"
        for stage in stages:
            assert stage_config(config, schema, fp32, stage) == stage_config(config, schema, bf16, stage), stage
            assert stage_config(config, schema, fp32, stage) == stage_config(paper, schema, f"ml100k{seed}", stage)
        backbones = [stage_config(config, schema, d, "backbone") for d in (fp32, bf16)]
        assert [b.pop("precision") for b in backbones] == ["float32", "bf16"] and backbones[0] == backbones[1]
    teacher_seeds = [stage_config(config, schema, f"ml100k_fp32{s}", "teacher")["seed"] for s in SEEDS]
    assert len(set(teacher_seeds)) == len(SEEDS)
    # The paper's figures were computed in float32 before the setting existed: its overlay keeps them so.
    assert {stage_config(paper, schema, d, "backbone")["precision"] for d in paper["datasets"] if "ml100k" in d} == {
        "float32"
    }


FAIR_OVERLAY = ROOT / "experiments" / "ml100k_fair.yaml"
FAIR_ARMS = {"4": tuple(f"ml100k_fair{s}" for s in SEEDS), "1": tuple(f"ml100k_fair_m1{s}" for s in SEEDS)}


def test_the_fair_test_fixes_its_regime_weights_and_seeds_before_any_run():
    """Up to ten targets per user and 600 steps for teachers and students alike, Table 6's Movie weights, bf16
    where the CPU has it; the seeds differ and share the data; the 1-layer pair distils in one block."""
    config = load_config([ROOT / "config.yaml", FAIR_OVERLAY])
    schema = load_schema(ROOT / "config.schema.yaml")
    first = FAIR_ARMS["4"][0]
    for depth, datasets in FAIR_ARMS.items():
        for dataset in datasets:
            teacher = stage_config(config, schema, dataset, "teacher")
            assert (teacher["targets_per_user"], teacher["max_steps"], teacher["batch_size"]) == (10, 600, 32)
            student = stage_config(config, schema, dataset, "student")
            assert student["layers"] == int(depth)
            assert all(student[k] == teacher[k] for k in ("targets_per_user", "max_steps", "learning_rate", "lora"))
            distill = stage_config(config, schema, dataset, "distill")
            weights = (distill["cos_weight"], distill["l2_weight"], distill["multi_supervision_weight"])
            assert weights == (1.0, 0.1, 1.0) and distill["blocks"] == (4 if depth == "4" else 1)
            assert stage_config(config, schema, dataset, "backbone")["precision"] == "auto"
            for stage in ("source", "preprocess", "negatives", "evaluate", "prompt"):
                assert stage_config(config, schema, dataset, stage) == stage_config(config, schema, first, stage)
        for stage in ("sasrec", "teacher"):
            assert len({stage_config(config, schema, d, stage)["seed"] for d in datasets}) == len(SEEDS), stage
    for seed in range(len(SEEDS)):  # the 1-layer pair's chain is the same seed's chain
        a, b = FAIR_ARMS["4"][seed], FAIR_ARMS["1"][seed]
        for stage in ("sasrec", "teacher", "backbone"):
            assert stage_config(config, schema, a, stage) == stage_config(config, schema, b, stage), stage


def write_ranks(results, dataset: str, target: str, ranks) -> None:
    """A trained model as the pipeline leaves it: its metrics row, its ranks table (the same ranks on both splits)
    and a training log."""
    import numpy as np
    import polars as pl

    from slmrec.evaluate import RANK_SCHEMA, split_metrics
    from slmrec.metrics import MetricsRow

    users = np.arange(1, len(ranks) + 1)
    frame = pl.concat(
        pl.DataFrame({"split": s, "user": users, "item": users, "rank": ranks, "full_rank": None}, schema=RANK_SCHEMA)
        for s in ("valid", "test")
    )
    (results / dataset / target).mkdir(parents=True)
    frame.write_parquet(results / dataset / target / "ranks.parquet")
    metrics = split_metrics(frame)
    params = {"total": 1, "trainable": 1, "inference": 1}
    row = MetricsRow(target, target, 1, metrics["valid"], metrics["test"], params, 60.0, 1.0, 50, 1.0, {})
    row.write(results / dataset / target / "metrics.json")
    pl.DataFrame({"step": [25, 50], "mrr": [1.0, 2.0]}).write_csv(results / dataset / target / "train_log.csv")


def test_the_fair_gate_sends_on_only_pairs_whose_teacher_is_better_per_user(tmp_path, monkeypatch, capsys):
    """On seed 1's validation ranks: E4SRec_8 clearly above E4SRec_4 sends 4←8 on (all its seeds' models);
    E4SRec_2 level with E4SRec_1 stops 1←2; E4SRec_16 below E4SRec_4 stops 4←16. The section fills."""
    import numpy as np

    monkeypatch.syspath_prepend(str(ROOT / "experiments"))  # as `python experiments/fair.py` finds summarize
    rng = np.random.default_rng(0)
    base = rng.integers(0, 100, size=600)
    better = base.copy()
    better[:300] = 0
    seed1 = FAIR_ARMS["4"][0]
    for target, ranks in {"teacher_l1": base, "teacher_l2": base, "teacher_l4": base, "teacher_l8": better}.items():
        write_ranks(tmp_path, seed1, target, ranks)
    write_ranks(tmp_path, seed1, "teacher", np.minimum(base + 5, 99))
    script = str(ROOT / "experiments" / "fair.py")
    monkeypatch.setattr(sys, "argv", ["fair.py", "--results", str(tmp_path), "--gate"])
    runpy.run_path(script, run_name="__main__")
    gate = capsys.readouterr().out
    assert re.search(
        r"^\| 4←8 \| teacher_l8 [\d.]+ \| teacher_l4 [\d.]+ \| \+[\d.]+ \[\+[\d.]+, \+[\d.]+\].* \| goes on \|$",
        gate,
        re.M,
    )
    assert re.search(r"^\| 1←2 \|.*\| \+0\.00 \[\+0\.00, \+0\.00\], p = 1 \| stops", gate, re.M), gate
    assert re.search(r"^\| 4←16 \|.*\| -[\d.]+ \[.*\| stops", gate, re.M), gate
    monkeypatch.setattr(sys, "argv", ["fair.py", "--results", str(tmp_path), "--targets"])
    runpy.run_path(script, run_name="__main__")
    targets = capsys.readouterr().out.split()
    assert targets == [
        f"results/{d}/{t}/metrics.json" for d in FAIR_ARMS["4"] for t in ("teacher_l8", "student_t8", "ablation/ce")
    ]

    for dataset in FAIR_ARMS["4"]:  # the test's models, the student level with its twin
        for target, ranks in {"teacher_l8": better, "student_t8": base, "ablation/ce": base}.items():
            if not (tmp_path / dataset / target).exists():
                write_ranks(tmp_path, dataset, target, ranks)
    doc = tmp_path / "experiments.md"
    doc.write_text((ROOT / "docs" / "experiments.md").read_text())
    monkeypatch.setattr(sys, "argv", ["fair.py", "--results", str(tmp_path), "--doc", str(doc)])
    runpy.run_path(script, run_name="__main__")
    text = doc.read_text()
    comparisons = text[text.index("<!-- fair_comparisons -->") : text.index("<!-- /fair_comparisons -->")]
    assert re.search(
        r"^\| student_t8 − ablation/ce \(CE only\) \| 3 × 600 \| \+0\.00 .*not distinguishable here", comparisons, re.M
    )
    assert re.search(r"^\| teacher_l8 − ablation/ce \(CE only\) \| 3 × 600 \|.*\| holds \|$", comparisons, re.M)
    assert "## Verdicts" in text and "<!-- table2 -->" in text  # the rest of the page is kept
