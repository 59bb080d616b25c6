"""Results of one experiment across seeds: the paper's tables as mean ± standard deviation, paired
differences for the key comparisons, the distillation loss balance and the wall times.

An experiment is a few arms (e.g. a pretrained and a randomly initialised backbone), each the same
chain run under several seeds, one `results/<dataset>` per seed. `experiments/summarize.py` writes
this module's markdown into `docs/experiments.md`; every number comes from the pipeline's own
`metrics.json` rows, training logs and Snakemake benchmark files.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from slmrec import layout, markdown, stats
from slmrec.errors import ArtifactError
from slmrec.evaluate import read_ranks
from slmrec.io import atomic_path, read_artifact, read_json
from slmrec.metrics import METRIC_NAMES, SPLITS, MetricsRow
from slmrec.report import direct_points, figure2_table
from slmrec.targets import (
    ABLATION,
    CE_LOG_KEY,
    LOSS_TERMS,
    PAPER_VARIANTS,
    STUDENT,
    TEACHER,
    ablation_target,
    teacher_name,
    variant_label,
)


@dataclass(frozen=True)
class Arm:
    """One experimental condition: the datasets (`results/<dataset>`) that repeat it under other seeds."""

    name: str
    datasets: tuple[str, ...]


@dataclass(frozen=True)
class Row:
    """A table row: a target under one arm, labelled by `label` with `{model}` the pipeline's model name."""

    arm: Arm
    target: str
    label: str = "{model}"


def read_row(results: Path, dataset: str, target: str) -> MetricsRow | None:
    """The metrics row of one target, or None when that target was not (yet) trained for the dataset."""
    path = Path(layout.model_file(target, "metrics", dataset, results))
    return MetricsRow.read(path) if path.exists() else None


def seed_rows(results: Path, arm: Arm, target: str) -> dict[str, MetricsRow]:
    """The target's rows by dataset, for the arm's seeds that have it."""
    rows = {dataset: read_row(results, dataset, target) for dataset in arm.datasets}
    return {dataset: row for dataset, row in rows.items() if row is not None}


def mean_std(values: Sequence[float]) -> str:
    """`mean ± sd` over seeds (sample standard deviation); one value is shown alone."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def accuracy_table(results: Path, rows: Sequence[Row], split: str = "test") -> str:
    """Table 2's layout: each row's metrics as mean ± sd over the seeds that have it, and how many."""
    metrics = METRIC_NAMES
    lines = []
    for row in rows:
        found = seed_rows(results, row.arm, row.target)
        if not found:
            continue
        label = row.label.format(model=next(iter(found.values())).model)
        cells = [mean_std([r.__dict__[split][m] for r in found.values()]) for m in metrics]
        lines.append([label, *cells, str(len(found))])
    return markdown.table(["Model", *metrics, "seeds"], lines)


def ablation_table(results: Path, arm: Arm) -> str:
    """Table 4: the offline student with only some of its loss terms, mean ± sd over seeds."""
    return accuracy_table(results, [Row(arm, ablation_target(v), variant_label(v)) for v in PAPER_VARIANTS])


def validation_curves(results: Path, rows: Sequence[Row]) -> str:
    """Validation MRR at every evaluation step, one line per seed, the selected checkpoint (`best_step`) in bold:
    whether a run had levelled off when its steps ended."""
    curves = []
    for row in rows:
        for dataset, found in seed_rows(results, row.arm, row.target).items():
            path = Path(layout.model_file(row.target, "train_log", dataset, results))
            if not path.exists():
                raise ValueError(f"{path}: no training log; validation curves are for the LLM stages, which log one")
            log = read_artifact(path, pl.read_csv)
            label = f"{row.label.format(model=found.model)} ({dataset})"
            curves.append((label, dict(zip(log["step"], log["mrr"], strict=True)), found.best_step))
    steps = sorted({step for _, curve, _ in curves for step in curve})
    lines = [
        [label, *("-" if s not in curve else f"**{curve[s]:.2f}**" if s == best else f"{curve[s]:.2f}" for s in steps)]
        for label, curve, best in curves
    ]
    return markdown.table(["Model (dataset)", *(str(s) for s in steps)], lines)


def layer_table(results: Path, dataset: str, sweep: Sequence[str], direct: Path) -> str:
    """Figure 2's numbers for one dataset: its trained E4SRec_l rows and its deep teacher's direct inference."""
    rows = [row for t in sweep if (row := read_row(results, dataset, t)) is not None]
    trained = {row.layers: row.test for row in rows if row.layers is not None}
    read = direct_points(read_artifact(direct, read_json)) if direct.exists() else {}
    return figure2_table(trained, read)


def efficiency_table(results: Path, dataset: str, targets: Sequence[str]) -> str:
    """Table 5 as measured by the pipeline: parameters and the training and test-inference times."""
    lines = []
    for target in targets:
        row = read_row(results, dataset, target)
        if row is None:
            continue
        lines.append(
            [
                row.model,
                str(row.layers or "-"),
                f"{row.params['trainable'] / 1e6:.3f}",
                f"{row.params['inference'] / 1e6:.1f}",
                f"{row.train_seconds / 60:.1f}",
                f"{row.inference_seconds:.1f}",
            ]
        )
    header = ["Model", "Layers", "Tr params (M)", "Inf params (M)", "Tr time (min)", "Inf time, test (s)"]
    return markdown.table(header, lines)


def model_ranks(results: Path, dataset: str, target: str) -> pl.DataFrame | None:
    """A model's per-user ranks, or None where it was not trained (or was made before ranks were written)."""
    path = Path(layout.model_file(target, "ranks", dataset, results))
    return read_ranks(path) if path.exists() else None


def loss_balance(results: Path, dataset: str, target: str = STUDENT) -> str:
    """Each distillation term raw and weighted at the first and the last logged step, and its share of
    the weighted total: whether a term can steer training depends on the share, not on its weight."""
    row = read_row(results, dataset, target)
    log_path = Path(layout.model_file(target, "train_log", dataset, results))
    if row is None or not log_path.exists():
        return "not run yet\n"
    log = pl.read_csv(log_path)
    weights = row.details["distill"]
    kept = [t for t in LOSS_TERMS if t.log_key in log.columns]  # the terms this student trained with
    terms = [(CE_LOG_KEY, "CE", 1.0)] + [(t.log_key, t.label, weights[t.weight_key]) for t in kept]
    lines = []
    for position, name in ((0, "first"), (log.height - 1, f"last (step {log['step'][-1]})")):
        weighted = {key: log[key][position] * weight for key, _, weight in terms}
        total = sum(weighted.values())
        for key, label, weight in terms:
            raw = log[key][position]
            share = 100 * weighted[key] / total
            lines.append([f"{name}: {label}", f"{raw:.3f}", f"{weight:g}", f"{weighted[key]:.3f}", f"{share:.0f}%"])
    return markdown.table(["Step: term", "raw", "λ", "λ · raw", "share of total"], lines)


def alignment_table(path: Path) -> str:
    """experiments/alignment.py's measurements: per teacher, each student's distance from the teacher's
    states block by block (1 − cos, then L2 against the teacher state's norm). A distilled student that
    sits no closer than the CE-only or untrained one would mean its alignment terms do nothing."""
    if not path.exists():
        return f"*not measured yet (experiments/alignment.py writes {path.name}).*\n"
    lines = []
    for measured in read_artifact(path, read_json)["teachers"].values():
        for row in measured["rows"]:
            blocks = row["blocks"]
            layers = ", ".join(f"{b['student_layer']}→{b['teacher_layer']}" for b in blocks)
            cos = " / ".join(f"{b['cos_distance']:.3f}" for b in blocks)
            l2 = " / ".join(f"{b['l2_distance']:.1f} of {b['teacher_norm']:.0f}" for b in blocks)
            total_cos, total_l2 = (sum(b[key] for b in blocks) for key in ("cos_distance", "l2_distance"))
            against = f"{teacher_name(measured['teacher_layers'])} ({layers})"
            lines.append([row["model"], against, cos, f"{total_cos:.3f}", l2, f"{total_l2:.1f}"])
    header = ["Student", "against (layers s→t)", "1 − cos per block", "Σ", "L2 per block (of ‖h_t‖)", "Σ"]
    return markdown.table(header, lines)


def benchmark_times(root: Path) -> pl.DataFrame:
    """Wall and CPU seconds of every job under `root`, from Snakemake's `benchmark:` files (the last line of each,
    the latest run), named by path relative to `root`; longest first."""
    rows = []
    for path in sorted(root.rglob("*.benchmark.tsv")):
        table = read_artifact(path, partial(pl.read_csv, separator="\t"))
        if table.is_empty() or not {"s", "cpu_time"} <= set(table.columns):
            raise ArtifactError(
                f"{path}: expected Snakemake's benchmark columns s and cpu_time and a row, found "
                f"columns {table.columns} and {len(table)} rows"
            )
        job = str(path.relative_to(root)).removesuffix(".benchmark.tsv")
        rows.append({"job": job, "wall_s": float(table["s"][-1]), "cpu_s": float(table["cpu_time"][-1])})
    schema = {"job": pl.String, "wall_s": pl.Float64, "cpu_s": pl.Float64}
    return pl.DataFrame(rows, schema=schema).sort("wall_s", descending=True)


def wall_times(results: Path, datasets: Sequence[str]) -> str:
    """Wall-clock seconds of every job, summed per dataset and per rule kind."""
    lines = []
    for dataset in datasets:
        jobs = benchmark_times(layout.logs_dir(dataset, results))
        if jobs.is_empty():
            continue
        kinds: dict[str, float] = {}
        for job, s in zip(jobs["job"], jobs["wall_s"], strict=True):
            kind = _job_kind(job)
            kinds[kind] = kinds.get(kind, 0.0) + s
        detail = ", ".join(f"{k} {v / 60:.0f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
        lines.append([dataset, f"{jobs['wall_s'].sum() / 3600:.2f}", detail])
    return markdown.table(["Dataset", "Jobs' wall time (h)", "By kind (min)"], lines)


def _job_kind(job: str) -> str:
    """A benchmark file's job name reduced to its kind: teacher_l8 -> teacher_l*, ablation_ce -> ablation."""
    for prefix, kind in ((f"{TEACHER}_l", "teacher_l*"), (f"{STUDENT}_t", "student_t*"), (ABLATION, ABLATION)):
        if job.startswith(prefix):
            return kind
    return job


@dataclass(frozen=True)
class PrecisionArms:
    """The mixed-precision experiment: for each seed suffix, a float32 dataset and a bf16 one, the same chain."""

    target: str
    seeds: tuple[str, ...]
    float32: str = "ml100k_fp32"
    bf16: str = "ml100k_bf16"

    def pairs(self) -> list[tuple[str, str]]:
        return [(f"{self.float32}{s}", f"{self.bf16}{s}") for s in self.seeds]


PRECISION_TOLERANCE = 0.5  # points of NDCG@10: bf16 is acceptable if the interval lies within it (or holds 0)


def precision_table(results: Path, arms: PrecisionArms, metrics: Sequence[str] = ("NDCG@10", "MRR")) -> str:
    """Each seed's float32 and bf16 model (validation and test metrics, training wall time), then bf16 − float32
    per user over the seeds whose per-user ranks exist, with the paired interval, p-value and verdict."""
    lines: list[list[str]] = []
    ranks: dict[str, list[pl.DataFrame]] = {"float32": [], "bf16": []}
    for pair in arms.pairs():
        seed = pair[0].removeprefix(arms.float32).removeprefix("_s") or "1"
        rows = [row for d in pair if (row := read_row(results, d, arms.target)) is not None]
        if len(rows) < len(pair):
            lines.append([seed, "not run yet", "", "", "", ""])
            continue
        minutes = [benchmark_minutes(layout.logs_dir(d, results), arms.target) for d in pair]
        cells = [f"{row.valid['NDCG@10']:.2f} / {row.test['NDCG@10']:.2f}" for row in rows]
        lines.append([seed, *cells, *(f"{m:.0f}" for m in minutes), f"{minutes[0] / minutes[1]:.2f}x"])
        files = [Path(layout.rescored_ranks(d, arms.target, results)) for d in pair]
        if all(f.exists() for f in files):
            for name, file in zip(("float32", "bf16"), files, strict=True):
                ranks[name].append(read_artifact(file, pl.read_parquet))
    header = ["Seed", "float32 NDCG@10 valid / test", "bf16", "float32 min", "bf16 min", "speed-up"]
    table = markdown.table(header, lines)
    if not ranks["float32"]:
        return table + "\nPer-user comparison: no per-user ranks yet (`experiments/precision.py` computes them).\n"
    diffs = []
    for split in SPLITS:
        a = np.stack([frame[split].to_numpy() for frame in ranks["bf16"]])
        b = np.stack([frame[split].to_numpy() for frame in ranks["float32"]])
        for metric in metrics:
            d = stats.paired_difference(a, b, metric)
            within = d.low >= -PRECISION_TOLERANCE and d.high <= PRECISION_TOLERANCE
            verdict = "acceptable" if within or not d.excludes_zero else "not acceptable"
            diffs.append([split, metric, d.text(), str(d.seeds), str(d.users), verdict])
    header = ["Split", "Metric", "bf16 − float32 [95% CI], p", "Seeds", "Users", "Verdict"]
    return table + "\n" + markdown.table(header, diffs)


@dataclass(frozen=True)
class DistillPair:
    """A (student m ← teacher l) candidate of the fair test: the arm that repeats it over seeds, its teacher and
    student targets, and the gate: in `gate_dataset` (seed 1), the teacher against `shallow`, the same model at
    the student's depth, on validation."""

    name: str
    arm: Arm
    teacher: str
    student: str
    shallow: str
    gate_dataset: str
    twin: str = ablation_target("ce")  # the CE-only student of the same depth

    def targets(self) -> list[str]:
        """The models the test trains in every seed of the arm."""
        return [self.teacher, self.student, self.twin]


GATE_METRIC = "NDCG@10"


def gate(results: Path, pair: DistillPair) -> stats.PairedDifference | None:
    """Teacher − E4SRec_m (the student's depth) per user on validation `GATE_METRIC`; None until both ran."""
    teacher, shallow = (model_ranks(results, pair.gate_dataset, t) for t in (pair.teacher, pair.shallow))
    if teacher is None or shallow is None:
        return None
    return stats.paired_difference(*stats.paired_ranks([teacher], [shallow], "valid"), GATE_METRIC)


def gate_passed(results: Path, pair: DistillPair) -> bool:
    """The pair goes on when the teacher beats the student's depth with an interval above zero."""
    difference = gate(results, pair)
    return difference is not None and difference.low > 0


def gate_table(results: Path, pairs: Sequence[DistillPair]) -> str:
    """The gate: each candidate's teacher and E4SRec_m on validation, their per-user difference, and whether
    the pair goes on."""
    lines = []
    for pair in pairs:
        rows = [row for t in (pair.teacher, pair.shallow) if (row := read_row(results, pair.gate_dataset, t))]
        difference = gate(results, pair)
        if difference is None or len(rows) < 2:
            lines.append([pair.name, "not run yet", "", "", ""])
            continue
        cells = [f"{row.model} {row.valid[GATE_METRIC]:.2f}" for row in rows]
        outcome = "goes on" if gate_passed(results, pair) else "stops: the interval is not above zero"
        lines.append([pair.name, *cells, difference.text(), outcome])
    header = ["Pair", f"teacher, valid {GATE_METRIC}", f"E4SRec_m, valid {GATE_METRIC}", "teacher − E4SRec_m", "gate"]
    return markdown.table(header, lines)


def pair_comparisons(results: Path, pairs: Sequence[DistillPair], metrics: Sequence[str] = ("NDCG@10", "MRR")) -> str:
    """Per user over the seeds that have all three models: the student against its CE-only twin (the claim),
    against its teacher, and the teacher against the twin (the gap distillation has to pass on)."""
    compared = []
    for pair in pairs:
        seeds = [d for d in pair.arm.datasets if all(model_ranks(results, d, t) is not None for t in pair.targets())]
        if not seeds:
            continue
        ranks = {t: [read_ranks(layout.model_file(t, "ranks", d, results)) for d in seeds] for t in pair.targets()}
        names = {t: MetricsRow.read(layout.model_file(t, "metrics", seeds[0], results)).model for t in pair.targets()}
        names[pair.twin] += " (CE only)"
        for a, b in ((pair.student, pair.twin), (pair.student, pair.teacher), (pair.teacher, pair.twin)):
            compared.append((f"{names[a]} − {names[b]}", stats.compare_ranks(ranks[a], ranks[b], metrics)))
    if not compared:
        return "*No pair has all three models in any seed yet.*\n"
    return stats.comparison_table(compared, metrics)


def seed_ranks(results: Path, rows: Sequence[Row], datasets: Sequence[str]) -> list[pl.DataFrame] | None:
    """Each row's per-user ranks on its dataset of one seed, or None where one of them has none."""
    found = [model_ranks(results, d, row.target) for row, d in zip(rows, datasets, strict=True)]
    return None if any(ranks is None for ranks in found) else [ranks for ranks in found if ranks is not None]


def row_comparisons(
    results: Path, pairs: Sequence[tuple[Row, Row]], metrics: Sequence[str] = ("NDCG@10", "MRR")
) -> str:
    """Per user, A − B for each pair of rows, over the seeds where both models have ranks (the i-th dataset of
    each row's arm paired: a seed against the same seed of another arm): the interval, p-value and verdict, the
    rows labelled as in the accuracy tables. A pair with no such seed yet is named as not run."""
    compared, missing = [], []
    for rows in pairs:
        seeds = [
            (datasets, ranks)
            for datasets in zip(*(row.arm.datasets for row in rows), strict=True)
            if (ranks := seed_ranks(results, rows, datasets)) is not None
        ]
        if not seeds:
            missing.append(" − ".join(f"{row.label.format(model=row.target)} ({row.arm.name})" for row in rows))
            continue
        names = [
            row.label.format(model=MetricsRow.read(layout.model_file(row.target, "metrics", d, results)).model)
            for row, d in zip(rows, seeds[0][0], strict=True)
        ]
        first, second = ([ranks[i] for _, ranks in seeds] for i in (0, 1))
        compared.append((f"{names[0]} − {names[1]}", stats.compare_ranks(first, second, metrics)))
    table = stats.comparison_table(compared, metrics) if compared else ""
    return table + "".join(f"\n*{pair}: not run yet.*\n" for pair in missing)


def benchmark_minutes(logs: Path, target: str) -> float:
    """Wall minutes of one job from its Snakemake `benchmark:` file."""
    jobs = benchmark_times(logs)
    return float(jobs.filter(pl.col("job") == target)["wall_s"].sum()) / 60


def replace_generated(document: str, blocks: dict[str, Callable[[], str]]) -> str:
    """The document with the text between `<!-- name -->` and `<!-- /name -->` regenerated for each block;
    the hand-written prose around the markers is kept. Every block of the document must have a generator,
    or its old numbers would stay behind unnoticed."""
    orphans = sorted(set(re.findall(r"<!-- ([\w-]+) -->", document)) - set(blocks))
    for name, make in blocks.items():
        document = fill_block(document, name, make())
    if orphans:
        raise ValueError(f"the document's blocks {orphans} have nothing to fill them")
    return document


def arm_section(
    name: str, results: Path, arm: Arm, models: list[Row], pairs: list[tuple[Row, Row]], curves: list[Row]
) -> dict[str, Callable[[], str]]:
    """The blocks of an experiment section on one arm, `<name>_valid` … `<name>_walltimes` in docs/experiments.md:
    its models on each split, its pairs per user, the validation curves of `curves`, and its datasets' wall times."""
    return {
        f"{name}_valid": partial(accuracy_table, results, models, "valid"),
        f"{name}_test": partial(accuracy_table, results, models, "test"),
        f"{name}_comparisons": partial(row_comparisons, results, pairs),
        f"{name}_curves": partial(validation_curves, results, curves),
        f"{name}_walltimes": partial(wall_times, results, arm.datasets),
    }


def fill_document(doc: Path, blocks: dict[str, Callable[[], str]]) -> None:
    """Fill some of `doc`'s blocks (one section's), written atomically: a block that fails leaves the file as it was."""
    document = doc.read_text()
    for name, make in blocks.items():
        document = fill_block(document, name, make())
    with atomic_path(doc) as tmp:
        tmp.write_text(document)


def section_parser(description: str) -> argparse.ArgumentParser:
    """The command line every experiments/ script shares: the results it reads and the document it fills."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--doc", type=Path, default=Path("docs/experiments.md"))
    return parser


def fill_block(document: str, name: str, text: str) -> str:
    """The document with `text` between `<!-- name -->` and `<!-- /name -->`."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if start not in document or end not in document:
        raise ValueError(f"the document has no {start} … {end} block to fill")
    head, rest = document.split(start, 1)
    return head + start + "\n" + text + end + rest.split(end, 1)[1]


def linked_figure(made: Path, doc: Path, link: str, caption: str) -> str:
    """A plot copied to `link` (relative to the document) and shown; until the plot exists, a line saying what
    will draw it, because an image link to a missing file renders as a broken picture."""
    if not made.exists():
        return f"*{caption}: not drawn yet (the report rule of {made.parent.name} makes {made.name}).*\n"
    with atomic_path(doc.parent / link) as tmp:
        shutil.copyfile(made, tmp)
    return f"![{caption}]({link})\n"
