"""Recommendations out, measured: the `recommend` rules' scoring for a student and its teacher, and the student's
exports in each variant.

    .venv/bin/python benchmarks/recommend.py --results /work/kd/results --dataset ml100k_kd --student ablation/ce

On the results of a finished run (`--results`, the directory that holds `<dataset>/`):
1. users/s of the `recommend_shard` stage's scoring (`slmrec.recommend.top_k`: each user's whole known history, the
   top `recommend.k` items, the history left out) for the student and its teacher, loaded as the pipeline loads them
   (LoRA beside the backbone), and the student's speed-up;
2. the student exported in each variant, as the `export` rule writes it (`slmrec.export.export_llmrec`): its size on
   disk, and users/s of the same scoring through `load_export(...).recommend`;
3. each variant against the float32 export: per-user test NDCG@10 on the stored candidates (the evaluation protocol,
   `slmrec.evaluate.user_ranks`), variant − float32 with its paired bootstrap interval and randomization p-value
   (`slmrec.stats`), and the mean overlap of the two top-10 lists.

Everything computes in float32 (`--precision`) except where a variant decides otherwise: bf16 weights compute in
bf16, and int8 (torch's dynamic quantization) also rounds each linear layer's input to int8.
Users/s is the best of `--repeats` timed passes, after a warm-up batch.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from slmrec import layout, markdown
from slmrec.config import schema_defaults
from slmrec.data.samples import EvalSplit, load_training_data
from slmrec.evaluate import history_batches, user_ranks
from slmrec.export import Export, export_llmrec, load_export
from slmrec.io import read_json
from slmrec.metrics import MetricsRow, metrics_from_ranks
from slmrec.models.llmrec import LLMRec
from slmrec.precision import PRECISIONS
from slmrec.recommend import IdMap, KnownUsers, TopK, load_model, top_k
from slmrec.stats import RESAMPLES, paired_difference
from slmrec.targets import student_teacher

METRIC = "NDCG@10"
OVERLAP_K = 10


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="the results directory of a finished run")
    parser.add_argument("--dataset", required=True, help="the dataset under it, e.g. ml100k_kd")
    parser.add_argument("--student", default="student", help="the student's target (default: student)")
    parser.add_argument("--teacher", help="the teacher's target (default: the student's own teacher)")
    parser.add_argument(
        "--backbone",
        type=Path,
        help="the backbone checkpoint (default: the one the student's config.json records, a relative path read from "
        "the directory above --results, where snakemake ran)",
    )
    parser.add_argument("--variants", nargs="+", default=list(layout.EXPORT_VARIANTS), choices=layout.EXPORT_VARIANTS)
    parser.add_argument("-k", type=int, default=schema_defaults("recommend")["k"], help="items per user")
    parser.add_argument("--batch-size", type=int, default=128, help="users per batch (the eval_batch_size resource)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best counts")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap and permutation resamples")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--users", type=int, help="only the first N users (a quick check)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch's intra-op threads (default: torch's own). On a machine that other work shares, 1 thread: two "
        "threads waiting on each other slow small products many times over",
    )
    return parser.parse_args()


def users_per_second(runs: dict[str, Callable[[], object]], users: int, repeats: int) -> dict[str, float]:
    """`users` over the best wall time of each run, the runs taking turns `repeats` times (so that a burst of other
    work on the machine slows each alike)."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: users / seconds for name, seconds in best.items()}


def overlap(a: TopK, b: TopK, k: int) -> float:
    """The mean share of each row's first `k` items of `a` that are among its first `k` of `b`."""
    shared = [len(set(x) & set(y)) for x, y in zip(a.items[:, :k].tolist(), b.items[:, :k].tolist(), strict=True)]
    return float(np.mean(shared)) / k


def main() -> int:
    args = arguments()
    if args.threads:
        torch.set_num_threads(args.threads)
    root, dataset = args.results, args.dataset
    teacher = args.teacher or student_teacher(args.student)
    known = KnownUsers.read(layout.data_file("splits", dataset, root))
    items = IdMap.read(layout.data_file("item_ids", dataset, root), "item")
    test = load_training_data(*layout.data_inputs(dataset, root).values()).splits["test"]
    assert np.array_equal(known.ids, test.users), "splits and negatives list the users in another order"
    if args.users:  # the first users of both
        known = KnownUsers(known.ids[: args.users], known.train[: args.users], known.histories[: args.users])
        test = EvalSplit(
            test.name,
            test.users[: args.users],
            test.histories[: args.users],
            test.targets[: args.users],
            test.negatives[: args.users],
        )
    recorded = Path(read_json(layout.model_file(args.student, "config", dataset, root))["backbone"])
    backbone = args.backbone or (recorded if recorded.is_absolute() else root.resolve().parent / recorded)

    def files(target: str) -> dict[str, str]:
        names = {name: layout.model_file(target, name, dataset, root) for name in ("model", "config")}
        return {**names, "item_embeddings": layout.item_embeddings(dataset, root), "backbone": str(backbone)}

    def pipeline_model(target: str) -> LLMRec:
        model, _ = load_model(target, files(target), known, len(items), args.precision, "cpu")
        assert isinstance(model, LLMRec), f"{target} is not an LLM model"
        return model

    def scoring(model: LLMRec) -> Callable[[], TopK]:
        """The `recommend_shard` stage's scoring of every user (after one warm-up batch)."""
        max_len = model.config.max_len
        batches = history_batches(known.histories, max_len, args.batch_size)
        score = functools.partial(
            top_k, model.user_vectors, model.item_table, known.histories, k=args.k, max_len=max_len
        )
        score(batches[:1], exclude_history=True, progress=False)
        return functools.partial(score, batches, exclude_history=True, progress=False)

    print(f"{dataset}: {len(known.ids)} users, {len(items)} items, backbone {backbone}", file=sys.stderr)
    names = {t: MetricsRow.read(layout.model_file(t, "metrics", dataset, root)).model for t in (args.student, teacher)}
    print(f"timing recommend for {args.student} and {teacher}", file=sys.stderr)
    runs = {target: scoring(pipeline_model(target)) for target in (args.student, teacher)}
    rates = users_per_second(runs, len(known.ids), args.repeats)
    del runs
    rows = [[names[t], t, f"{rates[t]:.1f}"] for t in (args.student, teacher)]
    print(
        f"## `recommend` on {dataset}: {len(known.ids)} users, their whole known histories, top {args.k}, "
        f"{args.precision}, {torch.get_num_threads()} threads\n"
    )
    print(markdown.table(["model", "target", "users/s"], rows, text_columns=2))
    print(f"{names[args.student]} over {names[teacher]}: {rates[args.student] / rates[teacher]:.2f}x users/s\n")

    exports: dict[str, Export] = {}
    tops: dict[str, TopK] = {}
    ranks: dict[str, np.ndarray] = {}
    sizes: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            print(f"exporting {args.student} as {variant}", file=sys.stderr)
            directory = Path(tmp) / variant
            directory.mkdir()
            source = {"dataset": dataset, "target": args.student}
            export_llmrec(
                pipeline_model(args.student),
                backbone,
                layout.data_file("item_ids", dataset, root),
                directory,
                variant,
                source,
            )
            sizes[variant] = sum(p.stat().st_size for p in directory.iterdir()) / 1e6
            precision = "float32" if variant == "int8" else args.precision
            exports[variant] = load_export(directory, precision=precision, device="cpu")
        print("timing and scoring the exports", file=sys.stderr)
        runs = {
            variant: functools.partial(
                export.recommend, known.histories, args.k, batch_size=args.batch_size, progress=False
            )
            for variant, export in exports.items()
        }
        for variant, run in runs.items():
            tops[variant] = run()  # also the warm-up
            model = exports[variant].model
            ranks[variant] = user_ranks(
                model.user_vectors, model.item_table, test, model.config.max_len, args.batch_size, full_ranking=False
            ).sampled.numpy()
        export_rates = users_per_second(runs, len(known.ids), args.repeats)
        rows = [[variant, f"{sizes[variant]:.1f}", f"{export_rates[variant]:.1f}"] for variant in exports]
    reference = "float32" if "float32" in exports else next(iter(exports))
    header = [
        "variant",
        "size (MB)",
        "users/s",
        f"test {METRIC}",
        f"− {reference}, 95% CI, p",
        f"top-{OVERLAP_K} overlap",
    ]
    for row, variant in zip(rows, exports, strict=True):
        mean = metrics_from_ranks(ranks[variant])[METRIC]
        difference = paired_difference(ranks[variant], ranks[reference], METRIC, resamples=args.resamples)
        compared = "(reference)" if variant == reference else difference.text()
        row += [f"{mean:.2f}", compared, f"{100 * overlap(tops[variant], tops[reference], OVERLAP_K):.1f}%"]
    print(f"## Exports of {names[args.student]} ({args.student}): {len(test)} test users, top {args.k}\n")
    print(markdown.table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
