"""End to end: the demo DAG up to the stored negatives, run by Snakemake in a temporary directory."""

from __future__ import annotations

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

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


def _small_reviews(path):
    from slmrec.config import schema_defaults
    from slmrec.data.synthetic import write_synthetic_reviews

    options = {key: value for key, value in schema_defaults("source").items() if key != "kind"}
    write_synthetic_reviews(path, **{**options, "users": 200, "items": 150, "seed": 3})
    return path


def test_a_local_path_is_read_in_place(workflow, tmp_path):
    raw = _small_reviews(tmp_path / "local_5.json.gz")
    extra = workflow / "local.yaml"
    extra.write_text(f"datasets:\n  mine:\n    source: {{kind: amazon2018, path: {raw}}}\n")
    run_snakemake(workflow, "results/mine/data/stats.json", "--configfile", str(extra))
    manifest = json.loads((workflow / "results/mine/data/manifest.json").read_text())
    assert list(manifest["inputs"]) == [str(raw)]
    assert not (workflow / "results" / "mine" / "raw").exists(), "a local file must not be copied"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_download_rule_fetches_a_mirror(workflow, tmp_path):
    raw = _small_reviews(tmp_path / "mirror_5.json.gz")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    extra = workflow / "mirror.yaml"
    extra.write_text(
        "datasets:\n  fetched:\n    source:\n      kind: amazon2018\n      file: Mirror_5.json.gz\n"
        f"      urls: [{base}/missing_5.json.gz, {base}/mirror_5.json.gz]\n"
    )
    try:
        run_snakemake(workflow, "results/fetched/data/stats.json", "--configfile", str(extra))
    finally:
        server.shutdown()
        server.server_close()
    fetched = workflow / "results" / "fetched" / "raw" / "Mirror_5.json.gz"
    assert fetched.read_bytes() == raw.read_bytes()
    manifest = json.loads((fetched.parent / "Mirror_5.json.gz.manifest.json").read_text())
    assert manifest["stage"] == "download" and len(manifest["config"]["urls"]) == 2


def test_a_real_domain_without_a_backbone_path_says_what_to_set(workflow):
    proc = run_snakemake(workflow, "--dry-run", "results/cloth/metrics.json", check=False)
    assert proc.returncode != 0
    assert "datasets.cloth.backbone: set `path`" in proc.stdout + proc.stderr
