"""Per-user ranks of the mixed-precision experiment's models, and its section of docs/experiments.md.

    .venv/bin/python experiments/precision.py [--results results] [--doc docs/experiments.md]

For each E4SRec_8 of experiments/ml100k_precision.yaml that has finished, the trained model is scored again on
validation and test through the pipeline's own protocol (`slmrec.evaluate.user_ranks`), in the precision it was
trained in, and its per-user ranks are kept under results/per_user_ranks/ (computed once; the metrics they give
must equal the model's metrics.json, or the script stops). Then the `precision` block of the document is filled:
each seed's figures, and bf16 − float32 per user with its paired bootstrap interval and randomization p-value.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import torch
from summarize import PRECISION

from slmrec import layout
from slmrec.data.samples import load_training_data
from slmrec.evaluate import user_ranks
from slmrec.io import read_json, write_parquet
from slmrec.metrics import METRIC_NAMES, metrics_from_ranks
from slmrec.models.llmrec import load_llmrec
from slmrec.models.sasrec import load_item_embeddings
from slmrec.summary import fill_document, precision_table, section_parser

TOLERANCE = 1e-6  # percent points: the ranks' metrics against metrics.json's, the same protocol twice
# bf16 scoring of the same weights in another process reproduced the job's ranks but for one user of 938 (rounding
# near a tie): under bf16 the metrics may differ by what one user's rank moves them.
BF16_USERS_OFF = 1


def score(results: Path, dataset: str, target: str, batch_size: int) -> pl.DataFrame:
    """Per-user ranks of one trained model on validation and test, checked against its metrics.json."""
    data = load_training_data(*layout.data_inputs(dataset, results).values())
    table = load_item_embeddings(layout.item_embeddings(dataset, results), data.num_items)
    max_len = model_max_len(results, dataset, target)
    directory = Path(layout.model_file(target, "model", dataset, results)).parent
    model = load_llmrec(directory, table, max_len=max_len).eval()
    row = read_json(layout.model_file(target, "metrics", dataset, results))
    columns = {}
    for split in ("valid", "test"):
        ranks = user_ranks(
            model.user_vectors,
            table,
            data.splits[split],
            max_len,
            batch_size,
            full_ranking=False,
        ).sampled
        metrics = metrics_from_ranks(ranks)
        allowed = TOLERANCE + (100 * BF16_USERS_OFF / len(ranks) if model.precision == "bf16" else 0.0)
        off = {m: metrics[m] - row[split][m] for m in METRIC_NAMES if abs(metrics[m] - row[split][m]) > allowed}
        if off:
            sys.exit(f"{dataset}/{target}: per-user ranks on {split} disagree with metrics.json by {off}")
        columns[split] = ranks.numpy()
    return pl.DataFrame({"user": data.splits["test"].users, **columns})


def model_max_len(results: Path, dataset: str, target: str) -> int:
    """The history length the model was trained and scored with (its manifest's recorded setting: these models
    predate `max_len` in their own config)."""
    return read_json(layout.model_file(target, "manifest", dataset, results))["config"]["teacher"]["max_len"]


def main() -> None:
    parser = section_parser(__doc__)
    parser.add_argument(
        "--eval-batch-size",
        type=int,
        default=512,
        help="the teacher rule's eval_batch_size resource, with which metrics.json was scored: in bf16 the batch "
        "shapes the rounding, and the ranks must reproduce metrics.json",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    for pair in PRECISION.pairs():
        for dataset in pair:
            path = Path(layout.rescored_ranks(dataset, PRECISION.target, args.results))
            if (
                Path(layout.model_file(PRECISION.target, "metrics", dataset, args.results)).exists()
                and not path.exists()
            ):
                print(f"scoring {dataset}/{PRECISION.target}", file=sys.stderr)
                write_parquet(path, score(args.results, dataset, PRECISION.target, args.eval_batch_size))
    table = precision_table(args.results, PRECISION)
    fill_document(args.doc, {"precision": lambda: table})
    print(table)


if __name__ == "__main__":
    main()
