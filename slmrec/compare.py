"""Results of several datasets side by side (typically variants of one: `datasets.<name>.base`), with the
settings they were made with where those differ, and models compared user by user.

The settings come from the manifests behind each `results/<dataset>/metrics.json` (what the results were
made with, not what config.yaml says now), paired by their place under `results/<dataset>/`. The per-user
comparisons read each model's `ranks.parquet` (`slmrec.stats`: paired bootstrap interval, randomization p).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from slmrec import layout, markdown
from slmrec.errors import CompareError
from slmrec.evaluate import read_ranks
from slmrec.io import read_artifact, read_json
from slmrec.metrics import METRIC_NAMES, SPLITS
from slmrec.provenance import Link, flatten, trace
from slmrec.report import setting_text
from slmrec.stats import compare_ranks, comparison_table, verdict

VARIANT_METRICS = ("NDCG@10", "MRR")  # the variants' per-user differences, one row per model


def _anonymous(value: Any, dataset: str) -> Any:
    """A recorded value with the dataset's own paths made generic, so that they do not count as settings that
    differ (each dataset's checkpoints live under its own results/<dataset>/)."""
    return (
        value.replace(layout.dataset_dir(dataset) + "/", layout.dataset_dir() + "/")
        if isinstance(value, str)
        else value
    )


def recorded_settings(dataset: str, root: Path) -> dict[str, dict[str, Any]]:
    """Each manifest behind `root/<dataset>/metrics.json` (by its path under `root/<dataset>/`): its stage's
    settings as dotted keys, less the dataset's name (the metrics rule's `dataset`). Manifests outside the
    dataset (a shared backbone) are left out."""
    target = Path(layout.table("metrics", dataset, root))
    link = trace(target, root)
    if link.record is None:
        raise CompareError(
            f"{target}: no result with a manifest; make it first: snakemake --cores 2 {target.as_posix()}"
        )
    found: dict[str, dict[str, Any]] = {}
    stack: list[Link] = [link]
    while stack:
        node = stack.pop()
        stack.extend(node.inputs)
        if node.manifest is None or node.record is None or root / dataset not in node.manifest.parents:
            continue
        place = node.manifest.relative_to(root / dataset).as_posix()
        config = flatten(node.record.get("config", {}))
        found[place] = {k: _anonymous(v, dataset) for k, v in config.items() if k != "dataset"}
    return found


def differing_settings(datasets: list[str], root: Path) -> list[tuple[str, list[str], list[str]]]:
    """(key, value per dataset as written in config.yaml, or - where not recorded; manifests recording it) for
    every recorded setting whose values differ."""
    recorded = [recorded_settings(dataset, root) for dataset in datasets]
    missing = object()
    rows: dict[tuple[str, tuple[str, ...]], list[str]] = {}  # (key, values shown) -> manifests recording it
    for place in sorted(set().union(*recorded)):
        keys = sorted(set().union(*(r.get(place, {}) for r in recorded)))
        for key in keys:
            per_dataset = [r.get(place, {}).get(key, missing) for r in recorded]
            if all(v == per_dataset[0] for v in per_dataset):
                continue
            shown = tuple("-" if v is missing else setting_text(v) for v in per_dataset)
            rows.setdefault((key, shown), []).append(place)
    return [(key, list(shown), places) for (key, shown), places in rows.items()]


def compare(datasets: list[str], root: str | Path = "results") -> str:
    """Markdown: each model's test metrics (and valid MRR) per dataset, then the recorded settings that differ."""
    root = Path(root)
    tables = {}
    for dataset in datasets:
        path = Path(layout.table("metrics", dataset, root))
        if not path.is_file():
            raise CompareError(f"{path} does not exist; make it first: snakemake --cores 2 {path.as_posix()}")
        tables[dataset] = read_artifact(path, read_json)
    order = list(dict.fromkeys(row["target"] for table in tables.values() for row in table["rows"]))
    rows = [
        [row["model"], dataset, *(f"{row['test'][m]:.2f}" for m in METRIC_NAMES), f"{row['valid']['MRR']:.2f}"]
        for target in order
        for dataset, table in tables.items()
        for row in table["rows"]
        if row["target"] == target
    ]
    lines = [
        f"## Test metrics (%) of {', '.join(datasets)}",
        "",
        markdown.table(["Model", "Dataset", *METRIC_NAMES, "valid MRR"], rows, text_columns=2),
        "## Settings that differ (as recorded in the manifests behind each metrics.json)",
        "",
    ]
    differing = differing_settings(datasets, root)
    if differing:
        settings = [[f"`{key}`", *(f"`{v}`" for v in shown), ", ".join(places)] for key, shown, places in differing]
        header = ["Setting", *datasets, "Recorded in"]
        lines.append(markdown.table(header, settings, text_columns=len(header)))
    else:
        lines.append("None: every recorded setting is the same.")
    if len(datasets) > 1:
        lines += ["", variant_differences(datasets, order, root)]
    return "\n".join(lines) + "\n"


def ranks_of(root: Path, dataset: str, target: str) -> pl.DataFrame:
    path = Path(layout.model_file(target, "ranks", dataset, root))
    if not path.is_file():
        raise CompareError(
            f"{path} does not exist; make it first: snakemake --cores 2 "
            + layout.model_file(target, "metrics", dataset, root)
        )
    return read_ranks(path)


def variant_differences(datasets: list[str], order: list[str], root: Path) -> str:
    """Each model of the other datasets minus the same model of the first, user by user, where both have ranks
    of the same users and held-out items (variants of the same data and negatives)."""
    base, compared, skipped = datasets[0], [], []
    for target in order:
        for other in datasets[1:]:
            if not all(Path(layout.model_file(target, "ranks", d, root)).is_file() for d in (base, other)):
                continue
            try:
                diffs = compare_ranks([ranks_of(root, other, target)], [ranks_of(root, base, target)], VARIANT_METRICS)
            except ValueError as err:
                skipped.append(f"- {target}: {other} against {base} not paired: {err}")
                continue
            compared.append((f"{target}: {other} − {base}", diffs))
    head = f"## Per user, each variant against {base} (A − B, points)\n\n"
    body = comparison_table(compared, VARIANT_METRICS) if compared else "No model has ranks in both.\n"
    return head + body + "".join(f"\n{line}" for line in skipped)


def paired(datasets: list[str], a: str, b: str, root: str | Path = "results", column: str = "rank") -> str:
    """Markdown: model `a` minus model `b` in every metric, user by user, each dataset one seed (they must share
    users and held-out items: seeds of one chain), with the 95% interval, p-value and verdict."""
    root = Path(root)
    diffs = compare_ranks(
        [ranks_of(root, d, a) for d in datasets], [ranks_of(root, d, b) for d in datasets], METRIC_NAMES, column
    )
    seeds = f"{len(datasets)} seed{'s' if len(datasets) > 1 else ''} ({', '.join(datasets)})"
    ranking = "over all items" if column == "full_rank" else "on the stored candidates"
    lines = [
        f"## {a} − {b}, per user, {ranking}: {seeds}, {diffs['test'][METRIC_NAMES[0]].users} users",
        "",
        "Points of each metric: the mean over users of A − B (a user's value averaged over the seeds first), "
        "its 95% paired-bootstrap interval and the sign-flip randomization p-value.",
        "",
    ]
    rows = [
        [
            metric,
            diffs["valid"][metric].text(),
            diffs["test"][metric].text(),
            verdict(*(diffs[s][metric] for s in SPLITS)),
        ]
        for metric in METRIC_NAMES
    ]
    return "\n".join(lines) + "\n" + markdown.table(["Metric", "valid", "test", "A beats B"], rows)
