"""Score trained models again with this checkout's code and compare with the per-user ranks their run wrote: does
later code still score them as it did when they ran? (docs/experiments.md, the determinism check.)

    .venv/bin/python experiments/rescore.py --dataset ml100k sasrec student_t8 ablation/ce [--results results]

Run from the directory the results were computed in: a model's manifest names its backbone by a relative path.
Each model is loaded as the recommend rule loads it (`slmrec.recommend.load_model`), computing as it was trained,
and scored on validation and test in batches of `--batch-size` (the rules' `eval_batch_size`), with full ranking
where its ranks have it. The exit status is 1 if any model's ranks differ, naming how many users moved.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from slmrec import layout
from slmrec.data.samples import load_training_data
from slmrec.evaluate import read_ranks, score_recommender
from slmrec.io import read_json
from slmrec.recommend import KnownUsers, load_model


def model_inputs(results: Path, dataset: str, target: str) -> dict[str, str]:
    """What `load_model` reads for `target`: its weights, and an LLM's item table and backbone (from its manifest)."""
    files = {"model": layout.model_file(target, "model", dataset, results)}
    if layout.is_llm(target):
        manifest = read_json(layout.model_file(target, "manifest", dataset, results))
        (backbone,) = manifest["input_directories"]
        files |= {"item_embeddings": layout.item_embeddings(dataset, results), "backbone": backbone}
    return files


def moved_users(ours: pl.DataFrame, theirs: pl.DataFrame) -> dict[str, int]:
    """By split, how many users' held-out item got another rank (sampled or full)."""
    key = ["split", "user"]
    joined = ours.join(theirs, on=key, suffix="_run", how="full", coalesce=True)
    moved = joined.filter(
        ~pl.col("rank").eq_missing(pl.col("rank_run")) | ~pl.col("full_rank").eq_missing(pl.col("full_rank_run"))
    )
    return dict(moved.group_by("split").len().iter_rows())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", help="the models to score again (sasrec, teacher_l8, ablation/ce, ...)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--batch-size", type=int, default=512, help="users per batch (default: 512, the rules')")
    args = parser.parse_args()
    data_file = {name: layout.data_file(name, args.dataset, args.results) for name in ("splits", "negatives", "stats")}
    data = load_training_data(data_file["splits"], data_file["negatives"], data_file["stats"])
    known = KnownUsers.read(data_file["splits"])
    differ = False
    for target in args.targets:
        theirs = read_ranks(layout.model_file(target, "ranks", args.dataset, args.results))
        files = model_inputs(args.results, args.dataset, target)
        model, max_len = load_model(target, files, known, data.num_items, None, "cpu")
        full_ranking = theirs["full_rank"].null_count() == 0
        ours = score_recommender(model, data.splits, max_len, args.batch_size, full_ranking).ranks
        moved = moved_users(ours, theirs)
        differ |= bool(moved)
        print(f"{target}: " + (f"ranks differ, users moved by split: {moved}" if moved else "the same ranks"))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
