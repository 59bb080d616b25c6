"""Killing Snakemake stops the stage script it started, rather than leaving it training as an orphan."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
from conftest import SNAKEMAKE, copy_workflow, write_tiny_config
from helpers_training import job_writing

from slmrec.workflow import is_snakemake

pytestmark = pytest.mark.e2e

T = TypeVar("T")

# SASRec on the tiny demo, made to train (practically) forever.
ENDLESS_SASREC = {"datasets": {"demo": {"sasrec": {"epochs": 100000, "patience": 100000}}}}
TARGET = "results/demo/sasrec/metrics.json"


def wait_for(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.5)
    pytest.fail(f"no {what} after {timeout:.0f} s")


def test_killing_snakemake_stops_the_training_script(tmp_path: Path):
    workdir = copy_workflow(tmp_path)
    write_tiny_config(workdir, ENDLESS_SASREC)
    log = workdir / "results" / "demo" / "logs" / "sasrec.log"
    command = [SNAKEMAKE, "--cores", "2", TARGET, "--configfile", "tiny.yaml"]
    with open(tmp_path / "snakemake.out", "w") as out:
        snakemake = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    parent = psutil.Process(snakemake.pid)
    started: list[psutil.Process] = []
    try:
        script = wait_for(lambda: job_writing(parent, log), 120, "the sasrec job's process")
        started += parent.children(recursive=True)
        watching = f"watching snakemake (pid {snakemake.pid})"
        wait_for(lambda: log.is_file() and watching in log.read_text(), 60, f"'{watching}' in {log}")

        snakemake.kill()
        _, alive = psutil.wait_procs([script], timeout=30)
        assert not alive, f"the sasrec script (pid {script.pid}) outlived snakemake by 30 s"
        assert f"snakemake (pid {snakemake.pid}) is gone: stopping" in log.read_text()
    finally:
        for process in [parent, *started]:
            with contextlib.suppress(psutil.Error):
                process.kill()
        snakemake.wait(timeout=30)


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["/venv/bin/python", "/venv/bin/snakemake", "--cores", "2"], True),
        (["snakemake", "--profile", "profiles/slurm"], True),
        (["/usr/bin/python3", "-m", "snakemake", "--target-jobs", "sasrec:dataset=demo"], True),
        (["/venv/bin/python", "/work/.snakemake/scripts/tmpab12.sasrec.py"], False),
        (["/bin/bash", "-c", "set -euo pipefail; python .snakemake/scripts/tmpab12.sasrec.py"], False),
    ],
)
def test_which_ancestor_counts_as_snakemake(cmdline, expected):
    assert is_snakemake(cmdline) is expected
