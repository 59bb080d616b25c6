"""README, "Your own data": every example config runs on a small file of its layout, as the README says.

The examples are read from the README itself, so the README cannot drift from the code: each one is
preprocessed to its negatives, and the first, an entry with nothing but a `source`, runs to metrics.json
on the defaults (the tiny preset), with only the training lengths shortened to keep the test small.
"""

from __future__ import annotations

import gzip
import json
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import yaml
from conftest import ROOT, copy_workflow, run_snakemake
from helpers_data import stage_call
from snakemake.utils import validate

from slmrec.config import deep_merge, load_schema, stage_config
from slmrec.data.preprocess import MOVIELENS_LAYOUTS
from slmrec.stages import negatives, preprocess

SCHEMA_PATH = ROOT / "config.schema.yaml"
SCHEMA = load_schema(SCHEMA_PATH)
SHIPPED = yaml.safe_load((ROOT / "config.yaml").read_text())
USERS, ITEMS, PER_USER = 40, 30, 10

# Only the training lengths: depth, blocks, K and every data setting stay the defaults under test.
SHORT = {
    "sasrec": {"epochs": 2, "hidden": 32, "layers": 1},
    "teacher": {"batch_size": 16, "max_steps": 4, "eval_steps": 2, "warmup_steps": 1},
    "student": {"max_steps": 4},
}


def readme_examples() -> list[dict]:
    """The YAML blocks of the README's "Your own data" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Your own data\n") :].split("\n## ", 2)[1]
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section, flags=re.S)]


def ratings() -> list[tuple[str, str, float, int]]:
    """(user, item, rating, timestamp): each user rates PER_USER items in time order; every fifth rating is 2."""
    rows = []
    for user in range(USERS):
        for step in range(PER_USER):
            item = (user * 3 + step) % ITEMS
            rows.append((f"U{user}", f"I{item}", 2.0 if (user + step) % 5 == 0 else 5.0, 1_000_000 + 100 * step))
    return rows


def write_source(path: Path, source: dict, rows: list[tuple[str, str, float, int]]) -> None:
    """`rows` in the layout `source` names: what a user's own file of that kind looks like."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = source["kind"]
    if kind == "ratings_csv":
        columns = source.get("columns", ["item", "user", "rating", "timestamp"])
        fields = [dict(zip(("user", "item", "rating", "timestamp"), row, strict=True)) for row in rows]
        lines = [",".join(str(f[c]) for c in columns) for f in fields]
        path.write_text("\n".join(([",".join(columns)] if source.get("header") else []) + lines) + "\n")
    elif kind == "amazon2018":
        keys = ("reviewerID", "asin", "overall", "unixReviewTime")
        text = "".join(json.dumps({**dict(zip(keys, row, strict=True)), "reviewText": "ok"}) + "\n" for row in rows)
        with (gzip.open if path.suffix == ".gz" else open)(path, "wt") as out:
            out.write(text)
    elif kind == "recbole":
        header = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
        path.write_text("\n".join([header, *("\t".join(map(str, row)) for row in rows)]) + "\n")
    elif kind == "movielens":
        layout = MOVIELENS_LAYOUTS[source["variant"]]
        ids = [(u.lstrip("U"), i.lstrip("I"), f"{r:g}", str(t)) for u, i, r, t in rows]  # GroupLens ids are numbers
        lines = ([layout.separator.join(("userId", "movieId", "rating", "timestamp"))] if layout.header else []) + [
            layout.separator.join(row) for row in ids
        ]
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(f"{source['variant']}/{layout.file}", "\n".join(lines) + "\n")
    else:
        raise AssertionError(f"no writer for source kind {kind!r}")


@pytest.fixture(scope="module")
def own_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], list[str]]:
    """A workflow copy holding every README example as a config file, and its data at the example's relative path."""
    workdir = copy_workflow(tmp_path_factory.mktemp("own_data"))
    examples = readme_examples()
    files = []
    for number, example in enumerate(examples):
        for entry in example["datasets"].values():
            write_source(workdir / entry["source"]["path"], entry["source"], ratings())
        files.append(f"example{number}.yaml")
        (workdir / files[-1]).write_text(yaml.safe_dump(example))
    (workdir / "short.yaml").write_text(yaml.safe_dump(SHORT))
    return workdir, examples, [*files, "short.yaml"]


def run_data_stages(workdir: Path, example: dict, name: str, out: Path) -> tuple[dict, dict]:
    """The preprocess and negatives stages of one example's dataset, with the settings its rules would pass
    (the example merged over config.yaml, as `--configfile` does); returns those settings."""
    config = deep_merge(SHIPPED, example)
    validate(config, str(SCHEMA_PATH))
    source = config["datasets"][name]["source"]
    settings = {stage: stage_config(config, SCHEMA, name, stage) for stage in ("preprocess", "negatives")}
    files = {k: str(out / f) for k, f in [("splits", "splits.parquet"), ("stats", "stats.json"), ("user_ids", "u.pq")]}
    made = SimpleNamespace(
        **files, interactions=str(out / "i.pq"), item_ids=str(out / "items.pq"), manifest=str(out / "manifest.json")
    )
    params = {"preprocess": settings["preprocess"], "source": source}
    preprocess.run(stage_call("preprocess", {"raw": workdir / source["path"]}, made, params))
    drawn = SimpleNamespace(negatives=str(out / "negatives.parquet"), manifest=str(out / "negatives.manifest.json"))
    negatives.run(stage_call("negatives", files, drawn, {"negatives": settings["negatives"]}))
    return settings["preprocess"], settings["negatives"]


def test_the_readme_has_an_example_of_every_source_kind():
    sources = [entry["source"] for example in readme_examples() for entry in example["datasets"].values()]
    kinds = {source["kind"] for source in sources}
    assert kinds == set(SCHEMA["$defs"]["source"]["properties"]["kind"]["enum"]) - {"synthetic"}
    csv = [source for source in sources if source["kind"] == "ratings_csv"]
    assert {source.get("header", False) for source in csv} == {True, False}
    first = readme_examples()[0]["datasets"]
    assert [set(entry) for entry in first.values()] == [{"source"}], "the first example is an entry with only a source"


def test_every_readme_example_reads_its_file_as_documented(own_data, tmp_path):
    """Every row is read; ratings of 3 or less are dropped unless the entry sets preprocess.min_rating; K is
    num_negatives (999 unless set), or the most the catalogue allows, and the manifest records it."""
    workdir, examples, _ = own_data
    rows = ratings()
    for example in examples:
        for name, entry in example["datasets"].items():
            data = tmp_path / name
            cfg, negatives_cfg = run_data_stages(workdir, example, name, data)
            assert cfg["min_rating"] == entry.get("preprocess", {}).get("min_rating", 3), name
            assert negatives_cfg["num_negatives"] == entry.get("negatives", {}).get("num_negatives", 999), name
            stats = json.loads((data / "stats.json").read_text())
            assert stats["rows_read"] == len(rows), name
            assert stats["after_rating_filter"] == sum(r[2] > cfg["min_rating"] for r in rows), name
            assert stats["users"] == USERS and stats["items"] == ITEMS, name
            k = min(negatives_cfg["num_negatives"], ITEMS - stats["after_kcore"] // USERS)  # every user keeps as many
            drawn = pl.read_parquet(data / "negatives.parquet")
            assert drawn["test"].list.len().unique().to_list() == [k], name
            assert json.loads((data / "negatives.manifest.json").read_text())["num_negatives"] == k, name


def test_every_readme_example_builds_its_dag_on_the_defaults(own_data):
    """The layer counts of the defaults fit the default backbone, and each relative path is found from the
    directory snakemake runs in: every example dry-runs to metrics.json."""
    workdir, examples, files = own_data
    names = [name for example in examples for name in example["datasets"]]
    proc = run_snakemake(workdir, "-n", "--configfile", *files, "--", *(f"results/{n}/metrics.json" for n in names))
    jobs = proc.stdout + proc.stderr
    assert all(f"results/{n}/student/metrics.json" in jobs for n in names), jobs[-2000:]


@pytest.mark.e2e
def test_an_entry_with_only_a_source_runs_to_metrics_on_the_tiny_preset(own_data):
    workdir, examples, files = own_data
    (name,) = examples[0]["datasets"]
    run_snakemake(workdir, "--configfile", *files, "--", f"results/{name}/metrics.json", f"results/{name}/report.md")
    table = json.loads((workdir / "results" / name / "metrics.json").read_text())
    rows = {row["target"]: row for row in table["rows"]}
    assert set(rows) == {"popularity", "sasrec", "teacher", "student"}
    assert rows["teacher"]["layers"] == 8 and rows["student"]["layers"] == 4  # the defaults, on the 8-layer tiny preset
    # 30 items, 8 kept per user: K = 999 is lowered to the 22 each user has left, saying so in the rule's log.
    log = (workdir / "results" / name / "logs" / "negatives.log").read_text()
    assert "negatives.num_negatives = 999, but some user has only 22 of the 30 items left" in log
    report = (workdir / "results" / name / "report.md").read_text()
    assert "1 positive + 22 stored negatives" in report and "| `negatives.num_negatives` | `22` |" in report
