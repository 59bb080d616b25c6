"""End to end: the demo DAG up to the stored negatives, run by Snakemake in a temporary directory."""

from __future__ import annotations

import json

import polars as pl
from conftest import run_snakemake


def test_demo_dag_to_negatives(workflow):
    run_snakemake(workflow, "results/demo/data/negatives.parquet")
    data = workflow / "results" / "demo" / "data"
    stats = json.loads((data / "stats.json").read_text())
    assert stats["users"] > 1500 and stats["items"] > 1000
    assert stats["rows_read"] >= stats["after_rating_filter"] >= stats["after_dedup"] >= stats["after_kcore"]
    splits = pl.read_parquet(data / "splits.parquet")
    negatives = pl.read_parquet(data / "negatives.parquet")
    assert splits.height == negatives.height == stats["users"]
    assert negatives["test"].list.len().unique().to_list() == [999]
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["stage"] == "preprocess" and manifest["config"]["preprocess"]["kcore"] == 5
    for rule in ("synthesize", "preprocess", "negatives"):
        assert (workflow / "results" / "demo" / "logs" / f"{rule}.benchmark.tsv").exists()
    # A second run has nothing to do.
    dry = run_snakemake(workflow, "-n", "results/demo/data/negatives.parquet")
    assert "Nothing to be done" in dry.stdout + dry.stderr
