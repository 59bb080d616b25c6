"""Variants (`datasets.<name>.base`): two settings of the same data side by side, and `slmrec compare`."""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SNAKEMAKE, copy_workflow, run_snakemake, write_tiny_config

from slmrec.config import deep_merge, load_config, load_schema, stage_config, with_variants
from slmrec.errors import ConfigError

SHIPPED = ROOT / "config.yaml"


def readme_section() -> str:
    """The README's "Comparing settings", up to its first subsection: the variant example."""
    text = (ROOT / "README.md").read_text()
    return text[text.index("\n## Comparing settings\n") :].split("\n## ", 2)[1].split("\n### ")[0]


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", readme_section(), flags=re.S)


def write(tmp_path: Path, name: str, config: dict) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_a_variant_is_its_base_with_its_own_keys_merged_over_it(tmp_path):
    variants = {
        "datasets": {
            "demo_l2": {"base": "demo", "distill": {"l2_weight": 0.0}},
            "demo_l2_m2": {"base": "demo_l2", "student": {"layers": 2}},
        }
    }
    config = load_config([SHIPPED, write(tmp_path, "variants.yaml", variants)])
    schema = load_schema(ROOT / "config.schema.yaml")
    demo, variant = config["datasets"]["demo"], config["datasets"]["demo_l2_m2"]
    assert variant["base"] == "demo_l2" and "base" not in demo
    assert variant["source"] == demo["source"] and variant["source"]["users"] == 2000
    assert stage_config(config, schema, "demo_l2_m2", "teacher") == stage_config(config, schema, "demo", "teacher")
    assert stage_config(config, schema, "demo_l2_m2", "distill")["l2_weight"] == 0.0
    assert stage_config(config, schema, "demo", "distill")["l2_weight"] == 0.1
    assert stage_config(config, schema, "demo_l2_m2", "student")["layers"] == 2
    assert stage_config(config, schema, "demo_l2", "student")["layers"] == 4


@pytest.mark.parametrize(
    ("datasets", "message"),
    [
        ({"a": {"base": "nope"}}, "config key datasets.a.base: 'nope' is not a dataset; expected one of demo"),
        ({"a": {"base": "b"}, "b": {"base": "a"}}, "config key datasets.b.base: the bases form a cycle: a -> b -> a"),
        ({"a": {"base": "a"}}, "config key datasets.a.base: the bases form a cycle: a -> a"),
    ],
)
def test_a_base_that_is_no_dataset_or_a_cycle_is_refused_naming_the_key(datasets, message):
    config = {"datasets": {"demo": {"source": {"kind": "synthetic"}}, **datasets}}
    with pytest.raises(ConfigError) as err:
        with_variants(config)
    assert str(err.value) == message


def test_an_unknown_base_fails_the_dry_run(tmp_path):
    workdir = copy_workflow(tmp_path)
    write_tiny_config(workdir, {"datasets": {"demo_x": {"base": "dmeo"}}})
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "results/demo/metrics.json", "--configfile", "tiny.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "config key datasets.demo_x.base: 'dmeo' is not a dataset" in proc.stdout + proc.stderr


NO_ABLATION = {"report": {"ablation": False}}


def digests(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.e2e
def test_two_variants_of_the_demo_coexist_and_compare_lists_both(finished_demo, tmp_path):
    """The README's example, as written, on the tiny demo: the variant runs beside the demo without touching a
    file of it, and `compare` lists both, with the one setting that differs."""
    workdir = tmp_path / "run"
    shutil.copytree(finished_demo, workdir, symlinks=True)
    demo = workdir / "results" / "demo"
    before = digests(demo)
    (variant_yaml,) = readme_blocks("yaml")
    # The variant's own ablation students (inherited from the tiny demo) would only lengthen the test.
    write_tiny_config(workdir, deep_merge(yaml.safe_load(variant_yaml), {"datasets": {"demo_l2": NO_ABLATION}}))
    (commands,) = readme_blocks("bash")
    snakemake, compare = [shlex.split(line.split("#")[0]) for line in commands.strip().splitlines()]
    assert snakemake[:3] == ["snakemake", "--cores", "2"] and compare[:3] == ["python", "-m", "slmrec"]
    run_snakemake(workdir, *snakemake[3:], "--configfile", "tiny.yaml")

    assert digests(demo) == before, "the variant changed a file of its base"
    variant = workdir / "results" / "demo_l2"
    assert (variant / "metrics.json").is_file() and (variant / "student" / "metrics.json").is_file()
    proc = subprocess.run([sys.executable, *compare[1:]], cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for model in ("Popularity", "SASRec", "E4SRec_4", "SLMRec 2←4"):
        for dataset in ("demo", "demo_l2"):
            assert re.search(rf"^\| {re.escape(model)}[^|]* \| {dataset} \|( [\d.]+ \|){{7}}$", out, re.M), (model, out)
    settings = out[out.index("## Settings that differ") :]
    assert re.findall(r"^\| `[^`]+` \|", settings, re.M) == ["| `distill.l2_weight` |"], settings
    assert "| `distill.l2_weight` | `0.1` | `0.0` | student/manifest.json |" in settings
    # User by user: SASRec is the same model in both (nothing it reads differs); the students are not.
    per_user = out[out.index("## Per user, each variant against demo") :]
    assert re.search(r"^\| sasrec: demo_l2 − demo \| 1 × \d+ \| \+0\.00 \[\+0\.00, \+0\.00\], p = 1 \|", per_user, re.M)
    assert re.search(r"^\| student: demo_l2 − demo \| 1 × \d+ \| [+-]\d+\.\d\d \[", per_user, re.M), per_user
    # The demo stays up to date beside its variant.
    dry = run_snakemake(workdir, "-n", "results/demo/metrics.json", "--configfile", "tiny.yaml")
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_compare_names_a_missing_result_and_how_to_make_it(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "slmrec", "compare", "demo", "demo_l2"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2
    expected = "results/demo/metrics.json does not exist; make it first: snakemake --cores 2 results/demo/metrics.json"
    assert expected in proc.stderr
