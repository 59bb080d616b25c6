"""The retry policy (slmrec/cluster.py) without a cluster: a job that fails on bad input runs once, whatever
`--retries` says; a job that fails for any other reason is retried. tests/test_slurm.py shows the same on Slurm."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
from conftest import copy_workflow, run_snakemake

from slmrec import cluster, workflow
from slmrec.call import StageCall
from slmrec.config import schema_defaults
from slmrec.errors import BackboneError, DataError
from slmrec.launch import launch
from slmrec.training import NonFiniteLossError

BAD_CSV = "i1,u1,5,1\ni2,u1,5,2\ni1,u2,4,3\n"  # every user and item falls to the 5-core filter


class Wildcards(dict):
    """What Snakemake hands a resource function: named wildcards with `.items()`."""


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_recorded_bad_input_stops_the_next_attempt_naming_the_error(in_tmp):
    try_number = cluster.retry_unless_bad_input("preprocess")
    wildcards = Wildcards(dataset="bad")
    assert try_number(wildcards, 1) == 1
    assert try_number(wildcards, 2) == 2  # a failure that left no record (killed, out of memory) is retried
    cluster.record_bad_input("preprocess", wildcards, DataError("no interactions left"), "results/bad/logs/p.log")
    assert try_number(wildcards, 1) == 1  # a new run's first attempt always runs
    with pytest.raises(cluster.NotRetried, match=r"preprocess \(dataset=bad\) .* DataError: no interactions left"):
        try_number(wildcards, 2)
    assert cluster.retry_unless_bad_input("negatives")(wildcards, 2) == 2  # another rule's job is not affected
    assert try_number(Wildcards(dataset="good"), 2) == 2


def test_a_record_left_by_an_earlier_run_is_ignored(in_tmp):
    wildcards = Wildcards(dataset="bad")
    path = cluster.record_bad_input("preprocess", wildcards, DataError("old"), "log")
    stale = time.time() - 3600
    os.utime(path, (stale, stale))
    assert cluster.retry_unless_bad_input("preprocess")(wildcards, 2) == 2


@pytest.mark.parametrize(
    "error",
    [NonFiniteLossError("non-finite training loss (nan)"), BackboneError("backbone.path: x.gguf is not a GGUF file")],
    ids=["non-finite-loss", "backbone"],
)
def test_a_stage_failing_on_bad_input_exits_65_and_leaves_the_record_that_stops_retries(in_tmp, monkeypatch, error):
    def fail(call, **options):
        raise error

    monkeypatch.setattr(workflow, "launch", fail)
    monkeypatch.setattr(workflow, "detach_stdin", lambda: None)  # pytest's own stdin stays
    job = SimpleNamespace(
        input={},
        output={},
        params={},
        resources={},
        log=[str(in_tmp / "t.log")],
        rule="teacher",
        wildcards=Wildcards(dataset="d"),
    )
    with pytest.raises(SystemExit) as exited:
        workflow.run_stage(job)
    assert exited.value.code == cluster.BAD_INPUT_EXIT_CODE
    with pytest.raises(cluster.NotRetried, match=type(error).__name__):
        cluster.retry_unless_bad_input("teacher")(Wildcards(dataset="d"), 2)


def test_bad_input_in_data_parallel_workers_is_bad_input_for_the_job(tmp_path):
    """With gpu > 1 the stage runs as torchrun workers: a worker's DataError reaches the job as a DataError (so it
    is recorded and never retried), not as torchrun's CalledProcessError."""
    (tmp_path / "bad.csv").write_text(BAD_CSV)
    out = {name: str(tmp_path / f"{name}.out") for name in ("interactions", "user_ids", "item_ids", "splits", "stats")}
    source = {"kind": "ratings_csv", "columns": ["item", "user", "rating", "timestamp"], "header": False}
    params = {"preprocess": schema_defaults("preprocess"), "source": source}
    call = StageCall("preprocess", {"raw": str(tmp_path / "bad.csv")}, {**out, "manifest": "m.json"}, params)
    with pytest.raises(DataError, match="no interactions left"):
        launch(call, processes=2, log_path=str(tmp_path / "workers.log"))


def test_placeholders_are_listed_by_rule_and_resource():
    def job(rule, **resources):
        return SimpleNamespace(rule=SimpleNamespace(name=rule), resources=resources)

    jobs = [job("teacher", slurm_partition="CHANGE_ME_gpu_partition", mem_mb=64000), job("metrics", mem_mb=1000)]
    assert cluster.placeholders(jobs) == ["teacher: slurm_partition=CHANGE_ME_gpu_partition"]
    with pytest.raises(cluster.ClusterSetupError, match="teacher: slurm_partition=CHANGE_ME_gpu_partition"):
        cluster.check_submission(jobs, "local", None)
    cluster.check_submission(jobs[1:], "local", None)


def test_a_data_error_runs_once_despite_retries(tmp_path):
    workdir = copy_workflow(tmp_path)
    (workdir / "bad.csv").write_text(BAD_CSV)
    (workdir / "bad.yaml").write_text("datasets:\n  bad:\n    source: {kind: ratings_csv, path: bad.csv}\n")
    args = ("results/bad/data/splits.parquet", "--retries", "2", "--configfile", "bad.yaml")
    proc = run_snakemake(workdir, *args, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "rule preprocess (dataset=bad) failed on bad input and is not retried" in output
    assert "exit status 65" in output
    assert output.count("localrule preprocess:") == 1  # one attempt started
    assert "Trying to restart" in output  # which Snakemake would have retried
    log = (workdir / "results/bad/logs/preprocess.log").read_text()
    assert log.count("DataError: no interactions left") >= 1
