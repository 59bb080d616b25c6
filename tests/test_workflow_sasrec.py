"""End to end: the demo DAG through SASRec and the popularity reference, on the tiny demo."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml
from conftest import TARGETS, run_snakemake
from safetensors.torch import load_file

from slmrec.config import deep_merge, schema_defaults
from slmrec.metrics import METRIC_NAMES, MetricsRow


@pytest.mark.e2e
def test_demo_dag_to_sasrec_and_popularity(finished_demo):
    """The tiny demo's SASRec and popularity stages: their outputs, logs, and the tiny config's overrides."""
    results = finished_demo / "results" / "demo"
    stats = json.loads((results / "data" / "stats.json").read_text())
    assert 200 < stats["users"] <= 300

    for stage in ("sasrec", "popularity"):
        row = MetricsRow.read(results / stage / "metrics.json")  # its metrics are percentages (checked on read)
        assert set(METRIC_NAMES) <= set(row.valid) and set(METRIC_NAMES) <= set(row.test)
        manifest = json.loads((results / stage / "manifest.json").read_text())
        assert manifest["stage"] == stage
        assert (results / "logs" / f"{stage}.log").is_file()
        assert (results / "logs" / f"{stage}.benchmark.tsv").is_file()

    # The per-epoch log line (loss, valid MRR, seconds) lands in the rule's log.
    log = (results / "logs" / "sasrec.log").read_text()
    assert log.count("valid MRR") >= 2 and "loss" in log

    for name in ("model.safetensors", "item_embeddings.safetensors", "train_log.csv"):
        assert (results / "sasrec" / name).is_file()
    table = load_file(results / "sasrec" / "item_embeddings.safetensors")["item_embeddings"]
    assert table.shape == (stats["items"] + 1, 32)
    assert not (results / "checkpoints" / "sasrec").exists() or not any((results / "checkpoints" / "sasrec").iterdir())

    # An extra --configfile is deep-merged into config.yaml by Snakemake (snakemake.utils.update_config): its
    # keys reached the rules through params:, the demo's other settings (lr, patience) stayed.
    sasrec_config = json.loads((results / "sasrec" / "manifest.json").read_text())["config"]["sasrec"]
    shipped = yaml.safe_load((finished_demo / "config.yaml").read_text())
    tiny = yaml.safe_load((finished_demo / "tiny.yaml").read_text())
    defaults = {**schema_defaults("sasrec"), **shipped.get("sasrec", {})}
    expected = deep_merge(
        deep_merge(defaults, shipped["datasets"]["demo"].get("sasrec", {})), tiny["datasets"]["demo"]["sasrec"]
    )
    expected.pop("authors_protocol")  # the sasrec rule leaves it to the sasrec_authors rule
    assert {k: sasrec_config[k] for k in expected} == expected
    assert sasrec_config["epochs"] == 2 and sasrec_config["hidden"] == 32
    assert pl.read_csv(results / "sasrec" / "train_log.csv").height == 2
    negatives = pl.read_parquet(results / "data" / "negatives.parquet")
    assert negatives["test"].list.len().unique().to_list() == [99]

    # Both outputs are complete: a second run has nothing to do.
    dry = run_snakemake(finished_demo, "-n", *TARGETS, "--configfile", "tiny.yaml")
    assert "Nothing to be done" in dry.stdout + dry.stderr
