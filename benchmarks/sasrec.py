"""Benchmark SASRec training: every position in one pass (slmrec) vs one sample per prefix (reference).

    .venv/bin/python benchmarks/sasrec.py                   # the demo dataset and a ~50k-user one
    .venv/bin/python benchmarks/sasrec.py --users 2000      # the demo size only

For each dataset (synthetic, the demo generator's shape) it builds the real artifacts (preprocess,
negatives), then:

* trains SASRec with the stage's own code (`slmrec.stages.sasrec.run`, the Snakemake rule) for a few
  epochs and reports seconds per epoch, training sequences/s and test metrics;
* times the same model trained the obvious way, one (prefix, next item) sample per row, on the same
  data for one epoch, with the same batch size, and reports its sequences/s;
* prints the speed ratio (prefix-loop time per epoch / slmrec time per epoch).

Both run in this process with the same torch thread count, so the ratio is fair on a noisy machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from slmrec.call import StageCall
from slmrec.config import schema_defaults
from slmrec.data.negatives import draw_negatives
from slmrec.data.preprocess import preprocess, read_amazon2018
from slmrec.data.synthetic import write_synthetic_reviews
from slmrec.evaluate import pad_left
from slmrec.io import write_json, write_parquet
from slmrec.models.sasrec import SASRec, SASRecConfig
from slmrec.stages.sasrec import run as run_sasrec

# The schema's SASRec settings with the demo's learning rate, and no early stopping within the timed epochs.
CONFIG = {**schema_defaults("sasrec"), "lr": 0.005, "patience": 100}
MAX_LEN = CONFIG["max_len"]


def build_dataset(workdir: Path, users: int, items: int) -> dict[str, Path]:
    raw = workdir / "reviews.json.gz"
    source = {**schema_defaults("source"), "users": users, "items": items}
    write_synthetic_reviews(raw, **{k: v for k, v in source.items() if k != "kind"})
    result = preprocess(read_amazon2018(raw, "error"), 3, 5)
    paths = {name: workdir / f"{name}.parquet" for name in ("splits", "users", "negatives")}
    write_parquet(paths["splits"], result.splits)
    write_parquet(paths["users"], result.users)
    write_json(workdir / "stats.json", result.stats)
    negatives = draw_negatives(result.splits, result.stats["items"], 999, 2025, users=result.users)
    write_parquet(paths["negatives"], negatives)
    paths["stats"] = workdir / "stats.json"
    return paths


def time_slmrec(paths: dict[str, Path], workdir: Path, epochs: int) -> dict[str, float]:
    out = workdir / "sasrec"
    files = ("model.safetensors", "item_embeddings.safetensors", "metrics.json", "train_log.csv", "manifest.json")
    output = {name.split(".")[0]: str(out / name) for name in files}
    inputs = {name: str(paths[name]) for name in ("splits", "negatives", "stats")}
    params = {
        "target": "sasrec",
        "sasrec": {**CONFIG, "epochs": epochs},
        "evaluate": {"full_ranking": False},
        "checkpoints": str(workdir / "checkpoints"),
    }
    with contextlib.redirect_stdout(sys.stderr):  # Trainer's per-epoch dicts are progress, not results
        row = run_sasrec(StageCall("sasrec", inputs, output, params, {"eval_batch_size": 512}))
    log = pl.read_csv(output["train_log"])
    # Includes the per-epoch validation and checkpoint the stage does: a conservative figure for slmrec.
    per_epoch = row.train_seconds / log.height
    return {"epoch_seconds": per_epoch, "test": row.test, "valid_seconds": row.valid["seconds"]}


def time_prefix_loop(paths: dict[str, Path], max_batches: int) -> float:
    """Seconds per epoch of one (prefix -> next item) sample per row, every prefix of every sequence.

    An epoch of this loop on a large dataset takes many minutes, so it runs `max_batches` batches and
    scales the time to the epoch's batch count (batches are all the same size, so this is linear).
    """
    splits = pl.read_parquet(paths["splits"])
    num_items = json.loads(paths["stats"].read_text())["items"]
    histories, labels = [], []
    for seq in splits["train"].to_list():
        for end in range(1, len(seq)):
            histories.append(seq[max(0, end - MAX_LEN) : end])
            labels.append(seq[end])
    inputs, targets = pad_left(histories, MAX_LEN), torch.tensor(labels)
    torch.manual_seed(CONFIG["seed"])
    model = SASRec(
        SASRecConfig(num_items, CONFIG["hidden"], CONFIG["layers"], CONFIG["heads"], CONFIG["dropout"], MAX_LEN)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=CONFIG["lr"], betas=(0.9, 0.98))
    model.train()
    order = torch.randperm(len(targets))
    starts = range(0, len(order), CONFIG["batch_size"])
    start = time.perf_counter()
    for begin in starts[:max_batches]:
        batch = order[begin : begin + CONFIG["batch_size"]]
        user = model.user_vectors(inputs[batch])
        logits = user @ model.item_table.T
        logits[:, 0] = float("-inf")
        loss = torch.nn.functional.cross_entropy(logits, targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    measured = min(max_batches, len(starts))
    return (time.perf_counter() - start) / measured * len(starts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[2000, 50000], help="dataset sizes (users)")
    parser.add_argument("--epochs", type=int, default=3, help="slmrec training epochs per dataset")
    parser.add_argument("--prefix-batches", type=int, default=300, help="batches timed in the prefix loop")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    for users in args.users:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            paths = build_dataset(workdir, users, max(2000, users // 4))
            sequences = pl.read_parquet(paths["splits"]).height
            fast = time_slmrec(paths, workdir, args.epochs)
            slow = time_prefix_loop(paths, args.prefix_batches)
            print(
                f"\n{users} users ({sequences} training sequences), SASRec d={CONFIG['hidden']}, "
                f"batch {CONFIG['batch_size']}, max_len {MAX_LEN}"
            )
            print(
                f"  slmrec (all positions, one pass): {fast['epoch_seconds']:.2f} s/epoch, "
                f"{sequences / fast['epoch_seconds']:.0f} sequences/s"
            )
            print(
                f"  one sample per prefix:            {slow:.2f} s/epoch, {sequences / slow:.0f} sequences/s "
                f"(timed over up to {args.prefix_batches} batches, scaled to the epoch)"
            )
            print(f"  speed ratio (prefix loop / slmrec): {slow / fast['epoch_seconds']:.1f}x")
            test = fast["test"]
            print(
                f"  test after {args.epochs} epochs: HR@10 {test['HR@10']:.2f}  NDCG@10 {test['NDCG@10']:.2f}  "
                f"MRR {test['MRR']:.2f}  (scored in {test['seconds']:.2f} s)"
            )


if __name__ == "__main__":
    main()
