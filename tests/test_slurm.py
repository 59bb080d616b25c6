"""The SLURM profile without a cluster: stub SLURM commands run each submitted job on this machine.

tests/slurm_stubs/ holds `sbatch`, `squeue`, `sacct`, `scontrol`, `sinfo`, `sacctmgr`, `srun` and `scancel`
(see fake_slurm.py). They record every call as a JSON line, and `sbatch` runs the wrapped Snakemake job
in the background, so the demo DAG completes through snakemake-executor-plugin-slurm and the recorded
`sbatch` lines show what a real cluster would have been asked for.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow, run_snakemake

pytestmark = pytest.mark.e2e

STUBS = Path(__file__).resolve().parent / "slurm_stubs"

# A demo small enough that its 9 jobs (each two nested Snakemake starts) finish in about a minute.
TINY = {
    "datasets": {
        "demo": {
            "source": {"kind": "synthetic", "users": 300, "items": 300, "seed": 7},
            "sasrec": {"epochs": 2, "hidden": 32, "layers": 1},
            "teacher": {"layers": 4, "batch_size": 32, "max_steps": 4, "eval_steps": 2, "warmup_steps": 1},
            "student": {"layers": 2, "max_steps": 4},
            "distill": {"blocks": 2},
            "report": {"ablation": False},
        }
    },
    "negatives": {"num_negatives": 99},
}
RULES = {
    "synthesize",
    "preprocess",
    "negatives",
    "popularity",
    "sasrec",
    "backbone",
    "teacher",
    "teacher_states",
    "student",
    "metrics",
}
GPU_RULES = {"sasrec", "teacher", "teacher_states", "student"}


def sbatch_calls(log: Path) -> dict[str, list[list[str]]]:
    """The recorded sbatch argv lists by rule (from the job comment `rule_<name>[_wildcards_...]`), in order."""
    calls: dict[str, list[list[str]]] = {}
    for line in log.read_text().splitlines():
        call = json.loads(line)
        if call["cmd"] == "sbatch":
            comment = call["argv"][call["argv"].index("--comment") + 1]
            rule = comment.removeprefix("rule_").split("_wildcards_")[0]
            calls.setdefault(rule, []).append(call["argv"])
    return calls


def value(argv: list[str], name: str) -> str | None:
    """The value of an sbatch option given as `name value` or `name=value`."""
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def asks_for_gpu(argv: list[str]) -> bool:
    return any(arg.startswith(("--gpus", "--gres=gpu", "-G")) for arg in argv)


def test_demo_dag_completes_through_the_slurm_executor(tmp_path, monkeypatch):
    (tmp_path / "workflow").mkdir()
    workdir = copy_workflow(tmp_path / "workflow")
    override = tmp_path / "tiny.yaml"
    override.write_text(yaml.safe_dump(TINY))
    # The stubs travel to a private bin/ with their exec bits set, whatever a checkout did to them.
    bin_dir = tmp_path / "bin"
    shutil.copytree(STUBS, bin_dir)
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    log = tmp_path / "slurm_calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLMREC_SLURM_LOG", str(log))
    monkeypatch.setenv("SLMREC_SLURM_PYTHON", sys.executable)
    # sinfo's default partition differs from the profile's, so a partition seen below came from the profile.
    monkeypatch.setenv("SLMREC_SLURM_PARTITIONS", "stub_default,CHANGE_ME_cpu_partition,CHANGE_ME_gpu_partition")
    # The first teacher job fails (without training), so the retry shows memory growing with `attempt`.
    monkeypatch.setenv("SLMREC_SLURM_FAIL_ONCE", "teacher")
    # Answer a status query when a job ends rather than at the executor's next +10 s poll.
    monkeypatch.setenv("SLMREC_SLURM_STATUS_WAIT", "20")
    for name in [n for n in os.environ if n.startswith(("SLURM_", "SBATCH_", "SRUN_"))]:
        monkeypatch.delenv(name)

    run_snakemake(
        workdir,
        "results/demo/metrics.json",  # targets first: --configfile swallows the arguments after it
        "--profile",
        "profiles/slurm",
        # profiles/default (the workflow profile, loaded too) must not override the SLURM profile.
        "--jobs",
        "2",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--configfile",
        str(override),
    )

    metrics = json.loads((workdir / "results/demo/metrics.json").read_text())
    assert {"sasrec", "teacher", "student"} <= {row["target"] for row in metrics["rows"]}

    calls = sbatch_calls(log)
    assert set(calls) == RULES
    assert {rule: len(argvs) for rule, argvs in calls.items()} == {
        rule: 2 if rule == "teacher" else 1 for rule in RULES
    }
    for rule, argvs in calls.items():
        for argv in argvs:
            assert "--parsable" in argv
            assert value(argv, "-A") == "CHANGE_ME_account", (rule, argv)
            expected_partition = "CHANGE_ME_gpu_partition" if rule in GPU_RULES else "CHANGE_ME_cpu_partition"
            assert value(argv, "-p") == expected_partition, (rule, argv)
            assert asks_for_gpu(argv) == (rule in GPU_RULES), (rule, argv)
            if rule in GPU_RULES:
                assert value(argv, "--gpus") == "1"
                assert value(argv, "--cpus-per-task") == "8"

    first_teacher, retried_teacher = calls["teacher"]
    assert value(first_teacher, "--mem") == "64000"
    assert value(retried_teacher, "--mem") == "128000"  # mem_mb: 64000 * attempt, attempt 2
    assert value(first_teacher, "-t") == "1440"
    assert value(calls["student"][0], "--mem") == "64000"
    assert value(calls["sasrec"][0], "--mem") == "32000"
    assert value(calls["preprocess"][0], "--mem") == "16000"
    assert value(calls["preprocess"][0], "--cpus-per-task") == "2"

    # Inside each job the jobstep executor ran the rule through srun, with the GPU for the training rules.
    records = [json.loads(line) for line in log.read_text().splitlines()]
    sruns = [r for r in records if r["cmd"] == "srun"]
    assert len(sruns) == len(RULES)
    assert sum("--gpus=1" in r["argv"] for r in sruns) == len(GPU_RULES)
