"""What the Snakemake controller decides before it submits a job: no retry after bad input, and no submission to
a cluster while the profile still holds placeholders or would wait forever for job states.

Snakemake's `retries` restart every failed job, and the only hook it gives is that a retried job's resources are
evaluated again, with the next `attempt`. Each rule therefore declares the resource `try_number`
(`retry_unless_bad_input`). A stage that fails on bad input (`BAD_INPUT_ERRORS`: bad data, a setting that cannot
work) leaves a record (`record_bad_input`) and exits with `BAD_INPUT_EXIT_CODE`; when Snakemake would start the
next attempt, `try_number` finds the record and stops the run with the error instead of resubmitting. A job
killed by the scheduler (memory, time, `scancel`, a lost node) leaves no record and is retried, with more memory
where the rule or profile asks for `* attempt`.

Before the first job starts, `mark_pending` marks the outputs of every job the run will execute as incomplete.
Snakemake marks a job's outputs only when that job starts, so a run that fails at the teacher left the old
student, metrics and report looking current: the failed job's outputs were deleted, and Snakemake does not rebuild
a missing intermediate while everything downstream looks up to date ("Nothing to be done" over stale results).
With the marks, the next run reruns the whole interrupted change (`rerun-incomplete`, set in both profiles), or,
without that flag, stops and names the stale files.

This module is imported by the Snakefile, so it stays free of heavy imports.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from slmrec.errors import ClusterSetupError, NotRetried
from slmrec.io import atomic_path

BAD_INPUT_EXIT_CODE = 65  # EX_DATAERR (sysexits.h): the input data was incorrect
RECORDS = Path(".snakemake/slmrec/bad_input")
PLACEHOLDER = "CHANGE_ME"
# The SLURM executor pauses up to 180 s between status checks; `squeue` must still list a job that finished
# in such a pause (below 3x --slurm-init-seconds-before-status-checks the executor switches to `sacct` anyway).
SQUEUE_MIN_JOB_AGE_S = 180
# When this controller started: a record older than that was left by an earlier run, not by this run's attempt.
STARTED = time.time()


def record_path(rule: str, wildcards: Mapping[str, str]) -> Path:
    """Where a job of `rule` with these wildcards records a bad-input failure (relative to the working directory)."""
    key = ",".join(f"{name}={value}" for name, value in sorted(wildcards.items())) or "all"
    return RECORDS / rule / f"{key.replace('/', '%2F')}.json"


def record_bad_input(rule: str, wildcards: Mapping[str, str], error: BaseException, log: str) -> Path:
    """Record that this job failed on bad input, for the controller to read before it would retry the job."""
    path = record_path(rule, wildcards)
    record = {"rule": rule, "wildcards": dict(wildcards), "error": f"{type(error).__name__}: {error}", "log": log}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return path


def retry_unless_bad_input(rule: str) -> Callable[..., int]:
    """The `try_number` resource of `rule`: the attempt number, or `NotRetried` when the previous attempt of this
    run failed on bad input."""

    def try_number(wildcards: Any, attempt: int) -> int:
        path = record_path(rule, dict(wildcards.items()))
        if attempt > 1 and path.exists() and path.stat().st_mtime >= STARTED:
            record = json.loads(path.read_text())
            raise NotRetried(
                f"rule {rule} ({', '.join(f'{k}={v}' for k, v in record['wildcards'].items())}) failed on bad input "
                f"and is not retried, because it would fail the same way: {record['error']} (log: {record['log']}). "
                "Fix the input or the setting the message names, then run Snakemake again."
            )
        return attempt

    return try_number


def mark_pending(persistence: Any, jobs: Iterable[Any]) -> None:
    """Mark the outputs of the jobs this run will execute as incomplete, as Snakemake does when each one starts.

    A job that finishes clears its own marks; a job that never runs (an upstream one failed, the run was killed)
    leaves them, and its old outputs are therefore rebuilt by the next run, never taken for current ones.
    """
    for job in jobs:
        persistence.started(job)


def placeholders(jobs: Iterable[Any]) -> list[str]:
    """`rule: resource=value` for each resource of these jobs that still holds a CHANGE_ME placeholder."""
    found = set()
    for job in jobs:
        for name, value in job.resources.items():
            if isinstance(value, str) and PLACEHOLDER in value:
                found.add(f"{job.rule.name}: {name}={value}")
    return sorted(found)


def slurm_setting(name: str) -> str | None:
    """One value of `scontrol show config` (e.g. AccountingStorageType), or None where scontrol cannot tell."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return value.strip()
    return None


def check_submission(jobs: Iterable[Any], executor: str, status_command: str | None) -> None:
    """Refuse to submit (before any job is) while a resource still holds a placeholder, or when the SLURM executor
    would ask `sacct` for job states on a cluster without accounting, where it answers nothing and the run
    would wait forever."""
    left = placeholders(jobs)
    if left:
        raise ClusterSetupError(
            "the profile still holds placeholders, so nothing was submitted:\n  "
            + "\n  ".join(left)
            + "\nSet them under default-resources / set-resources in profiles/slurm/config.yaml "
            "(or with --default-resources / --set-resources); `sacctmgr show assoc user=$USER` lists your accounts, "
            "`sinfo -s` the partitions."
        )
    if executor != "slurm" or slurm_setting("AccountingStorageType") != "accounting_storage/none":
        return
    age = (slurm_setting("MinJobAge") or "").split()  # e.g. ["300", "sec"]
    too_young = bool(age) and age[0].isdigit() and int(age[0]) < SQUEUE_MIN_JOB_AGE_S
    if status_command == "sacct" or too_young:
        raise ClusterSetupError(
            "this cluster keeps no job accounting (scontrol show config: AccountingStorageType = "
            "accounting_storage/none), so `sacct` reports no job states and Snakemake would wait forever. "
            + (
                f"squeue sees a finished job only for MinJobAge = {' '.join(age)}, less than the "
                f"{SQUEUE_MIN_JOB_AGE_S} s the executor may pause between status checks: ask the admins to raise it."
                if too_young
                else "Set `slurm-status-command: squeue` in profiles/slurm/config.yaml."
            )
        )
