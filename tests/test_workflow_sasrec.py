"""End to end: the demo DAG through SASRec and the popularity reference, on a shrunken demo dataset."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml
from conftest import run_snakemake
from safetensors.torch import load_file

from slmrec.config import deep_merge
from slmrec.metrics import METRIC_NAMES

TARGETS = ("results/demo/sasrec/metrics.json", "results/demo/popularity/metrics.json")

# An extra --configfile is deep-merged into config.yaml by Snakemake (snakemake.utils.update_config):
# only the keys named here change, the demo's other settings (lr, patience, other datasets) stay.
FAST = {
    "datasets": {
        "demo": {
            "source": {"users": 300, "items": 300},
            "negatives": {"num_negatives": 99},
            "sasrec": {"epochs": 2, "hidden": 32, "layers": 1, "batch_size": 64},
        }
    }
}


@pytest.mark.e2e
def test_demo_dag_to_sasrec_and_popularity(workflow, tmp_path_factory):
    override = tmp_path_factory.mktemp("config") / "fast.yaml"
    override.write_text(yaml.safe_dump(FAST))
    # One thread for the trainer: two shared cores, and torch's default of two threads per job thrashes.
    # Targets first: --configfile and --set-threads take several values and would swallow them.
    options = ("--configfile", str(override), "--set-threads", "sasrec=1")
    run_snakemake(workflow, *TARGETS, *options)

    results = workflow / "results" / "demo"
    stats = json.loads((results / "data" / "stats.json").read_text())
    assert 200 < stats["users"] <= 300

    for stage in ("sasrec", "popularity"):
        metrics = json.loads((results / stage / "metrics.json").read_text())
        for split in ("valid", "test"):
            for name in METRIC_NAMES:
                assert 0 <= metrics[split][name] <= 100, (stage, split, name)
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

    # The override reached the rules through params: (deep-merged with the demo's own settings).
    sasrec_config = json.loads((results / "sasrec" / "manifest.json").read_text())["config"]["sasrec"]
    shipped = yaml.safe_load((workflow / "config.yaml").read_text())
    expected = deep_merge(
        deep_merge(shipped["sasrec"], shipped["datasets"]["demo"].get("sasrec", {})), FAST["datasets"]["demo"]["sasrec"]
    )
    assert {k: sasrec_config[k] for k in expected} == expected
    assert sasrec_config["epochs"] == 2 and sasrec_config["hidden"] == 32
    assert pl.read_csv(results / "sasrec" / "train_log.csv").height == 2
    negatives = pl.read_parquet(results / "data" / "negatives.parquet")
    assert negatives["test"].list.len().unique().to_list() == [99]

    # Both outputs are complete: a second run has nothing to do.
    dry = run_snakemake(workflow, "-n", *TARGETS, *options)
    assert "Nothing to be done" in dry.stdout + dry.stderr
