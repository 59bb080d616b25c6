"""profiles/slurm against a real one-node Slurm (tests/helpers_slurm.py): every rule of the demo DAG is a Slurm job.

The test profile is profiles/slurm/config.yaml with its placeholders filled in for this cluster, job status from
`squeue` (the cluster keeps no accounting), no GPU (the node has none), and memory and CPUs scaled to the node.
Its run times are the shipped profile's. Skipped where Slurm is not installed or the user is not root; `.ci/run`
installs it.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import copy_workflow, run_snakemake, write_tiny_config
from helpers_slurm import SlurmCluster, job_table, missing_reason, rule_of

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(missing_reason() is not None, reason=f"no real Slurm: {missing_reason()}"),
]

TARGET = "results/demo/metrics.json"
# Memory the test profile asks for is the shipped profile's / 32, so that every job fits the node.
MEMORY_SCALE = 32
# (memory MB, time limit, CPUs) each rule's first attempt asks for: the test profile's values, or the rule's own
# (rules/*.smk) where the profile sets none; the run times are the shipped profile's.
EXPECTED = {
    "synthesize": ("2000M", "00:15:00", "1"),
    "preprocess": ("500M", "02:00:00", "1"),
    "negatives": ("4000M", "01:00:00", "1"),
    "popularity": ("4000M", "00:30:00", "1"),
    "backbone": ("2000M", "00:10:00", "1"),
    "sasrec": ("1000M", "04:00:00", "2"),
    "sasrec_student": ("1000M", "04:00:00", "2"),
    "teacher": ("2000M", "1-00:00:00", "2"),
    "teacher_states": ("2000M", "02:00:00", "2"),
    "student": ("2000M", "1-00:00:00", "2"),
    "metrics": ("1000M", "00:05:00", "1"),
}
# The rules the shipped profile sends to the GPU partition.
GPU_RULES = {"sasrec", "sasrec_student", "teacher", "teacher_states", "student"}
# Its first job is cancelled while it runs, as the scheduler would kill it (off the DAG's critical path).
KILLED_RULE = "backbone"
# A ratings file whose every user and item falls to the 5-core filter: preprocess fails with a DataError.
BAD_CSV = "i1,u1,5,1\ni2,u1,5,2\ni1,u2,4,3\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A one-node Slurm for this module; every daemon it started is stopped afterwards."""
    slurm = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    pids = [proc.pid for proc in slurm.processes]
    yield slurm
    slurm.stop()
    alive = [pid for pid in pids if subprocess.run(["ps", "-p", str(pid)], capture_output=True).returncode == 0]
    assert not alive, f"daemons still running after stop(): {alive}"


def resources(section: dict[str, Any], gpu: int = 0) -> dict[str, Any]:
    """One resource section of the shipped profile, fitted to the test node."""
    fitted = dict(section)
    for name, value in section.items():
        if isinstance(value, str) and value.startswith("CHANGE_ME"):
            fitted[name] = {"slurm_account": "slmrec"}.get(name, "gpu" if "gpu" in value else "cpu")
    if "mem_mb" in section:
        base, _, factor = str(section["mem_mb"]).partition("*")
        fitted["mem_mb"] = f"{int(base) // MEMORY_SCALE} *{factor}" if factor else int(base) // MEMORY_SCALE
    if "cpus_per_task" in section:
        fitted["cpus_per_task"] = 2 if section["cpus_per_task"] > 2 else 1
    if "gpu" in section:
        fitted["gpu"] = gpu
    return fitted


def fitted_profile(workdir: Path, name: str, gpu_rule: str | None = None, **settings: Any) -> str:
    """Write profiles/<name>: the shipped SLURM profile fitted to the test cluster, `gpu_rule` asking for a GPU."""
    profile = yaml.safe_load((workdir / "profiles/slurm/config.yaml").read_text())
    profile["default-resources"] = resources(profile["default-resources"])
    profile["set-resources"] = {rule: resources(r) for rule, r in profile["set-resources"].items()}
    if gpu_rule:
        profile["set-resources"].setdefault(gpu_rule, {})["gpu"] = 1
    profile.update({"slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 1, **settings})
    (workdir / "profiles" / name).mkdir()
    (workdir / "profiles" / name / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return f"profiles/{name}"


def cancel_first_running_job(cluster: SlurmCluster, rule: str, stop: threading.Event, cancelled: list[str]) -> None:
    """Cancel the first job of `rule` two seconds after it starts running (its stage is then under way)."""
    while not stop.is_set():
        out = cluster.command("squeue", "--noheader", "--states=RUNNING", "--format=%i|%k", check=False)
        for line in out.splitlines():
            job_id, _, comment = line.strip().partition("|")
            if comment.startswith(f"rule_{rule}_"):
                time.sleep(2)
                cluster.command("scancel", job_id)
                cancelled.append(job_id)
                return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def slurm_demo(cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny demo DAG through the SLURM profile, with the first backbone job cancelled as it runs."""
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm_demo"))
    (workdir / "bad.csv").write_text(BAD_CSV)
    bad = {"source": {"kind": "ratings_csv", "path": "bad.csv"}}
    write_tiny_config(workdir, {"datasets": {"demo": {"report": {"ablation": False}}, "bad": bad}})
    profile = fitted_profile(workdir, "slurm-test")
    stop, cancelled = threading.Event(), []
    killer = threading.Thread(target=cancel_first_running_job, args=(cluster, KILLED_RULE, stop, cancelled))
    killer.start()
    started = time.monotonic()
    try:
        run_snakemake(workdir, TARGET, "--profile", profile, "--configfile", "tiny.yaml", env=cluster.env)
    finally:
        stop.set()
        killer.join()
    wall_s = time.monotonic() - started
    jobs = cluster.jobs()
    print(f"\nreal-Slurm demo DAG: {wall_s:.0f} s wall\n{job_table(jobs)}")
    return {"workdir": workdir, "profile": profile, "jobs": jobs, "cancelled": cancelled, "wall_s": wall_s}


def test_every_rule_is_a_job_with_the_profiles_memory_time_and_cpus(slurm_demo):
    metrics = json.loads((slurm_demo["workdir"] / TARGET).read_text())
    assert {"sasrec", "sasrec_student", "teacher", "student"} <= {row["target"] for row in metrics["rows"]}
    first_attempts: dict[str, dict[str, str]] = {}
    for job in slurm_demo["jobs"]:
        first_attempts.setdefault(rule_of(job), job)
    assert set(first_attempts) == set(EXPECTED)
    for rule, job in first_attempts.items():
        asked = (job["MinMemoryNode"], job["TimeLimit"], job["NumCPUs"])
        assert asked == EXPECTED[rule], rule
        assert job["Partition"] == ("gpu" if rule in GPU_RULES else "cpu")
        assert job["Account"] == "slmrec"
    states = {(rule_of(job), job["JobState"]) for job in slurm_demo["jobs"]}
    assert states == {(rule, "COMPLETED") for rule in EXPECTED} | {(KILLED_RULE, "CANCELLED")}


def test_a_job_killed_by_the_scheduler_is_retried_with_more_memory(slurm_demo):
    killed = [job for job in slurm_demo["jobs"] if rule_of(job) == KILLED_RULE]
    assert [job["JobId"] for job in killed[:1]] == slurm_demo["cancelled"]
    assert [job["JobState"] for job in killed] == ["CANCELLED", "COMPLETED"]
    memory = [int(job["MinMemoryNode"].removesuffix("M")) for job in killed]
    assert memory[1] == 2 * memory[0]  # mem_mb: <n> * attempt


def test_a_data_error_is_not_retried(slurm_demo, cluster):
    workdir = slurm_demo["workdir"]
    proc = run_snakemake(
        workdir,
        "results/bad/data/splits.parquet",
        "--profile",
        slurm_demo["profile"],
        "--configfile",
        "tiny.yaml",
        env=cluster.env,
        check=False,
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "rule preprocess (dataset=bad) failed on bad input and is not retried" in output
    assert "DataError: no interactions left" in output
    bad = [job for job in cluster.jobs() if job.get("Comment") == "rule_preprocess_wildcards_bad"]
    assert [(job["JobState"], job["ExitCode"]) for job in bad] == [("FAILED", "1:0")]
    assert "DataError" in (workdir / "results/bad/logs/preprocess.log").read_text()


def test_a_gpu_request_on_a_gpu_less_node_fails_at_once(cluster, tmp_path):
    """sbatch refuses the job, so it never waits in the queue for a GPU that never comes (a hang would end in
    run_snakemake's timeout). The run still waits for the jobs already running (backbone), so how long it takes
    depends on the machine's load and is not asserted."""
    workdir = copy_workflow(tmp_path)
    write_tiny_config(workdir)
    profile = fitted_profile(workdir, "slurm-gpu", gpu_rule="synthesize")
    before = len(cluster.jobs())
    proc = run_snakemake(
        workdir, TARGET, "--profile", profile, "--configfile", "tiny.yaml", env=cluster.env, check=False
    )
    assert proc.returncode != 0
    assert "synthesize" not in {rule_of(job) for job in cluster.jobs()[before:]}
    assert "SLURM sbatch failed" in proc.stdout + proc.stderr
    assert "Invalid generic resource (gres) specification" in proc.stdout + proc.stderr


@pytest.mark.parametrize("filled", [False, True], ids=["placeholders", "sacct_without_accounting"])
def test_the_profile_refuses_to_submit_what_cannot_work(cluster, tmp_path, filled):
    """The shipped profile (placeholders left), or one filled in but asking `sacct` on a cluster without
    accounting, submits nothing; the dry run of the same command works as the README writes it."""
    workdir = copy_workflow(tmp_path)
    write_tiny_config(workdir)
    sacct = {"slurm-status-command": "sacct"}
    profile = fitted_profile(workdir, "slurm-sacct", **sacct) if filled else "profiles/slurm"
    before = len(cluster.jobs())
    args = (TARGET, "--profile", profile, "--configfile", "tiny.yaml")
    proc = run_snakemake(workdir, *args, env=cluster.env, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    if filled:
        assert "so `sacct` reports no job states and Snakemake would wait forever" in output
    else:
        assert "the profile still holds placeholders, so nothing was submitted" in output
        assert "synthesize: slurm_partition=CHANGE_ME_cpu_partition" in output
    assert len(cluster.jobs()) == before
    assert "synthesize" in run_snakemake(workdir, *args, "-n", env=cluster.env).stdout
