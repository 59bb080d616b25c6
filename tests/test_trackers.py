"""`training.report_to`: the experiment tracker of every training stage, read back with the tracker's own reader and
held against `train_log.csv`; switching it reruns nothing."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import polars as pl
import pytest
from conftest import run_snakemake
from helpers_data import data_inputs, distill_settings, make_dataset, sasrec_outputs, sasrec_params, stage_call
from helpers_distill import distill_env, run_student
from helpers_training import Killed, kill_at
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from slmrec import layout
from slmrec.errors import ConfigError
from slmrec.stages import sasrec

NOT_LOGGED = ("step", "epoch", "seconds")  # train_log.csv's bookkeeping: the row's place and its wall time


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """About 145 users: 3 SASRec steps per epoch at batch size 64."""
    return make_dataset(
        tmp_path_factory.mktemp("tiny"), users=150, items=120, num_negatives=20, min_length=6, max_length=15
    )


def train_sasrec(data, out: Path, report_to: str) -> Path:
    """Train SASRec through its stage, as its rule calls it with `report_to`; return the model's directory."""
    params = sasrec_params(out / "checkpoints")
    sasrec.run(stage_call("sasrec", data_inputs(data), sasrec_outputs(out), params, report_to=report_to))
    return out


def tensorboard_scalars(runs: str | Path) -> dict[str, dict[int, float]]:
    """Every scalar TensorBoard's own reader finds in `runs`: tag -> step -> value."""
    events = EventAccumulator(str(runs))
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def assert_tracker_holds_the_train_log(scalars: dict[str, dict[int, float]], train_log: str | Path) -> None:
    """Each row of `train_log.csv` is in the tracker: the validation metrics at the row's step, and each loss term
    as the mean of what the tracker got since the previous row (the row's own mean). Trainer's callback names them
    `eval/<metric>` and `train/<term>`."""
    rows = pl.read_csv(train_log).to_dicts()
    assert rows, "no evaluation in the train log"
    previous = 0
    for row in rows:
        step = row["step"]
        for column, value in row.items():
            if column in NOT_LOGGED:
                continue
            if column.startswith("loss"):
                logged = [v for s, v in scalars[f"train/{column}"].items() if previous < s <= step]
                assert logged, f"no {column} logged at steps {previous + 1} to {step}"
                assert sum(logged) / len(logged) == pytest.approx(value, rel=1e-5), (column, step)
            else:
                assert scalars[f"eval/{column}"][step] == pytest.approx(value, rel=1e-6), (column, step)
        previous = step


def test_sasrec_logs_its_train_log_to_tensorboard_beside_the_model(tiny, tmp_path):
    model = train_sasrec(tiny, tmp_path / "sasrec", "tensorboard")
    scalars = tensorboard_scalars(layout.runs(model))
    assert {"train/loss", "eval/mrr", "eval/hr@10", "eval/ndcg@10"} <= set(scalars)
    assert_tracker_holds_the_train_log(scalars, model / "train_log.csv")


def test_a_distilled_student_logs_every_loss_term(backbone, tmp_path):
    env = distill_env(tmp_path, backbone)
    distill = distill_settings("student", kd_terms=["kd_logits", "kd_rank"])
    run_student(env, "student", distill, env.states, report_to="tensorboard")
    model = env.root / "student"
    terms = [c for c in pl.read_csv(model / "train_log.csv").columns if c.startswith("loss_")]
    assert {"loss_ce", "loss_cos", "loss_l2", "loss_ms", "loss_kd_logits", "loss_kd_rank"} <= set(terms)
    assert_tracker_holds_the_train_log(tensorboard_scalars(layout.runs(model)), model / "train_log.csv")


def test_without_a_tracker_there_is_no_runs_directory_and_a_fresh_run_clears_an_old_one(tiny, tmp_path):
    model = train_sasrec(tiny, tmp_path / "sasrec", "none")
    assert not Path(layout.runs(model)).exists()
    train_sasrec(tiny, model, "tensorboard")
    first = sorted(Path(layout.runs(model)).iterdir())
    train_sasrec(tiny, model, "tensorboard")  # a new run (the last one finished): its curves alone
    second = sorted(Path(layout.runs(model)).iterdir())
    assert len(first) == len(second) == 1 and first != second
    train_sasrec(tiny, model, "none")
    assert not Path(layout.runs(model)).exists(), "the curves of a model no longer there"


def test_a_resumed_run_adds_to_the_curves_of_the_killed_one(tiny, tmp_path, monkeypatch):
    kill_at(monkeypatch, 5)  # three steps an epoch: the first epoch is logged and checkpointed
    with pytest.raises(Killed):
        train_sasrec(tiny, tmp_path / "sasrec", "tensorboard")
    monkeypatch.undo()
    model = train_sasrec(tiny, tmp_path / "sasrec", "tensorboard")
    assert len(list(Path(layout.runs(model)).iterdir())) == 2, "an event file for each run"
    assert_tracker_holds_the_train_log(tensorboard_scalars(layout.runs(model)), model / "train_log.csv")


def test_a_missing_tracker_names_the_setting_and_the_extra(tiny, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"training\.report_to: .*pip install 'slmrec\[tensorboard\]'"):
        train_sasrec(tiny, tmp_path / "sasrec", "tensorboard")
    assert not (tmp_path / "sasrec" / "metrics.json").exists()


@pytest.mark.e2e
def test_switching_the_tracker_reruns_nothing_and_a_rerun_job_reports(finished_demo, tmp_path):
    """On the finished demo, `training.report_to` changes no job; a job run under it (SASRec, forced) writes its
    curves from the rule's resource, where the README says to open them."""
    workdir = tmp_path / "run"
    shutil.copytree(finished_demo, workdir, symlinks=True)
    tracked = ("--configfile", "tiny.yaml", "--config", "training={report_to: tensorboard}")
    metrics = layout.model_file("sasrec", "metrics", "demo")
    dry = run_snakemake(workdir, "-n", layout.table("metrics", "demo"), *tracked)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    run_snakemake(workdir, "--force", metrics, *tracked)
    model = workdir / Path(metrics).parent
    assert_tracker_holds_the_train_log(tensorboard_scalars(layout.runs(model)), model / "train_log.csv")
