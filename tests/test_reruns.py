"""Reruns after config edits: Snakemake's params trigger reruns exactly the stages whose settings changed.

Each test edits a copy of the tiny demo's finished run and asks `snakemake --dry-run` what it would run; the
finished run itself is never modified. One test kills a job of the changed run, and checks that the next run
completes the change rather than keep the stale results.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
from conftest import SNAKEMAKE, TARGETS, run_snakemake, write_tiny_config
from helpers_training import job_writing

from slmrec import layout
from slmrec.models.distill import TeacherStates

pytestmark = pytest.mark.e2e


def planned_jobs(workdir, *extra: str) -> dict[str, int]:
    """Rule name -> job count of a dry run (empty when nothing would run)."""
    proc = run_snakemake(workdir, *TARGETS, "--dry-run", "--configfile", "tiny.yaml", *extra)
    output = proc.stdout + proc.stderr
    if "Nothing to be done" in output:
        return {}
    stats = output[output.index("Job stats:") :].split("total")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)\s*$", stats, flags=re.M)}


@pytest.fixture
def edited_demo(finished_demo, tmp_path):
    """A copy of the finished run (outputs, metadata and all) whose config a test may edit."""
    workdir = tmp_path / "run"
    shutil.copytree(finished_demo, workdir, symlinks=True)
    return workdir


def test_nothing_reruns_without_a_change(edited_demo):
    assert planned_jobs(edited_demo) == {}


def test_runtime_settings_do_not_rerun(edited_demo):
    extra = (
        "--set-threads",
        "teacher=2",
        "--set-resources",
        "teacher:per_device_batch_size=16",
        "student:eval_batch_size=64",
    )
    assert planned_jobs(edited_demo, *extra) == {}


def test_a_distill_weight_reruns_only_the_students_that_use_it(edited_demo):
    write_tiny_config(edited_demo, {"distill": {"l2_weight": 0.5}})
    jobs = planned_jobs(edited_demo)
    # The student (which is also the ablation's `all` row) and ce_cos_l2; not ce, ce_cos or ce_cos_ms.
    assert jobs == {"student": 2, "ablation": 1, "metrics": 1, "report": 1}


def test_a_score_term_setting_reruns_only_the_students_that_use_it(edited_demo):
    write_tiny_config(edited_demo, {"distill": {"kd_temperature": 4.0}})
    jobs = planned_jobs(edited_demo)
    # ce_logits and init_logits; SASRec with logits KD and the SASRec student (both terms). Not the SLMRec student,
    # nor any row without logits KD.
    assert jobs == {"student": 2, "sasrec_student": 2, "ablation": 1, "metrics": 1, "report": 1}


def test_a_student_only_setting_reruns_no_teacher(edited_demo):
    write_tiny_config(edited_demo, {"datasets": {"demo": {"student": {"learning_rate": 0.01}}}})
    jobs = planned_jobs(edited_demo)
    assert jobs == {"student": 10, "ablation": 1, "metrics": 1, "report": 1}  # the LLM students, not SASRec's


def test_a_teacher_setting_reruns_teacher_and_downstream_only(edited_demo):
    # The demo sets its own teacher learning rate, so the edit goes where it takes effect.
    write_tiny_config(edited_demo, {"datasets": {"demo": {"teacher": {"learning_rate": 0.01}}}})
    jobs = planned_jobs(edited_demo)
    assert jobs.get("teacher") == 1
    assert jobs.get("student") == 10  # the student inherits the setting, so do the nine trained variants
    assert jobs.get("sasrec_student") == 3  # they read the new teacher's states and head
    assert {"metrics", "report", "ablation"} <= set(jobs)
    assert not {"preprocess", "negatives", "sasrec", "synthesize", "popularity"} & set(jobs)


@pytest.mark.parametrize(
    ("edit", "trained"),
    [
        ({"sasrec": {"max_len": 30}}, {"sasrec", "teacher", "student"}),
        ({"teacher": {"max_len": 20}}, {"teacher", "student"}),
    ],
    ids=["sasrec", "teacher"],
)
def test_max_len_reruns_no_data_stage(edited_demo, edit, trained):
    write_tiny_config(edited_demo, edit)
    jobs = planned_jobs(edited_demo)
    assert trained <= set(jobs)
    assert not {"synthesize", "preprocess", "negatives", "popularity"} & set(jobs)
    assert ("sasrec" in jobs) == ("sasrec" in trained)


def test_report_settings_rerun_no_training(edited_demo):
    write_tiny_config(edited_demo, {"datasets": {"demo": {"report": {"ablation": False, "kd_ablation": False}}}})
    assert planned_jobs(edited_demo) == {"report": 1}


def test_teacher_layers_rerun_no_layer_sweep_teacher(swept_demo, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(swept_demo, workdir, symlinks=True)
    assert planned_jobs(workdir) == {}
    write_tiny_config(workdir, {"datasets": {"demo": {"teacher": {"layers": 8}, "report": {"layer_sweep": [1, 2]}}}})
    jobs = planned_jobs(workdir)
    # Only `teacher` (and what learns from it) reruns: teacher_l1 and teacher_l2 read their depth from the target.
    assert jobs.get("teacher") == 1
    assert jobs.get("student") == 9  # ce reads no teacher; student_t2 learns from teacher_l2


def test_kcore_reruns_everything_from_preprocess(edited_demo):
    write_tiny_config(edited_demo, {"preprocess": {"kcore": 6}})
    jobs = planned_jobs(edited_demo)
    assert {"preprocess", "negatives", "sasrec", "popularity", "teacher", "student", "metrics", "report"} <= set(jobs)
    assert "synthesize" not in jobs and "backbone" not in jobs


def job_process(snakemake: subprocess.Popen[str], log: Path, timeout: float = 300) -> psutil.Process:
    """The process of the Snakemake job that writes the rule log `log` (every rule runs the same script, so the
    log it holds open tells the jobs apart), once it has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and snakemake.poll() is None:
        if job := job_writing(psutil.Process(snakemake.pid), log):
            return job
        time.sleep(0.2)
    pytest.fail(f"no job writing {log} appeared (snakemake exit code {snakemake.poll()})")


def start_teacher_change(workdir) -> tuple[dict[str, int], subprocess.Popen[str], psutil.Process]:
    """Change a teacher setting of a finished run and start the run that applies it: the jobs it plans, the
    running Snakemake, and its teacher job once started."""
    write_tiny_config(workdir, {"datasets": {"demo": {"teacher": {"max_steps": 6}}}})
    change = planned_jobs(workdir)
    assert {"teacher", "teacher_states", "student", "metrics", "report"} <= set(change)
    cmd = [SNAKEMAKE, "--cores", "2", *TARGETS, "--configfile", "tiny.yaml"]
    snakemake = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return change, snakemake, job_process(snakemake, workdir / layout.log("teacher", "demo"))


def test_a_change_whose_job_was_killed_is_completed_by_the_next_run(edited_demo):
    """Finish a run, change a teacher setting, kill the teacher job: the next run must not say "Nothing to be
    done" over the old student, metrics and report (whose teacher is gone), but redo the whole change."""
    change, snakemake, teacher = start_teacher_change(edited_demo)
    teacher.kill()
    _, stderr = snakemake.communicate(timeout=300)
    assert snakemake.returncode != 0, stderr[-3000:]
    assert not (edited_demo / "results/demo/teacher/trainable.safetensors").exists()  # Snakemake deleted it

    assert planned_jobs(edited_demo) == change  # the interrupted change, whole, not "Nothing to be done"
    # Without --rerun-incomplete (the profile sets it), Snakemake stops and names the stale results.
    plain = run_snakemake(
        edited_demo, *TARGETS, "--dry-run", "--configfile", "tiny.yaml", "--workflow-profile", "none", check=False
    )
    said = plain.stdout + plain.stderr
    assert plain.returncode != 0
    assert "seem to be incomplete" in said and "results/demo/metrics.json" in said and "--rerun-incomplete" in said


def test_a_killed_snakemake_leaves_a_lock_and_after_unlock_the_change_is_still_pending(edited_demo):
    """The README's "Interrupting a run": SIGKILL to Snakemake stops its job (the watchdog), leaves the lock
    (LockException), and after `--unlock` the next run still plans the whole change."""
    change, snakemake, teacher = start_teacher_change(edited_demo)
    snakemake.kill()
    snakemake.wait(timeout=60)
    psutil.wait_procs([teacher], timeout=60)
    assert not teacher.is_running() or teacher.status() == psutil.STATUS_ZOMBIE

    locked = run_snakemake(edited_demo, *TARGETS, "--configfile", "tiny.yaml", check=False)  # a dry run locks nothing
    assert locked.returncode != 0 and "LockException" in locked.stdout + locked.stderr
    run_snakemake(edited_demo, "--unlock")
    assert planned_jobs(edited_demo) == change


@pytest.mark.e2e
def test_a_copied_results_directory_reruns_a_downstream_stage_in_its_new_place(finished_demo, tmp_path):
    """The finished demo copied elsewhere is self-contained: the teacher-state pass reruns there from the copy's
    own declared inputs (its backbone among them) and gives the same states."""
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(finished_demo, moved, symlinks=True)
    states = layout.states("teacher", dataset="demo")
    before = TeacherStates.load(moved / states).states
    (moved / states).unlink()
    run_snakemake(moved, states, "--configfile", "tiny.yaml")
    assert torch.equal(TeacherStates.load(moved / states).states, before)
    assert TeacherStates.load(finished_demo / states).states.shape == before.shape  # the original is untouched
