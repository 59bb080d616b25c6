"""The per-dataset results: one metrics table (`metrics.json`) and a readable report (`report.md`).

The table has a row per model, laid out like the paper's Table 2 (accuracy) and Table 5
(efficiency), and ends with the student's speed-ups over the teacher.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl

from slmrec.io import atomic_path, read_json, utc_now, write_json, write_manifest
from slmrec.metrics import METRIC_NAMES

TABLE_METRICS = ("HR@1", "HR@5", "NDCG@5", "HR@10", "NDCG@10", "MRR")
ROW_KEYS = ("model", "stage", "layers", "valid", "test", "params", "train_seconds", "inference_seconds")


def metrics_table(dataset: str, rows: dict[str, str | Path], stats_path: str | Path) -> dict[str, Any]:
    """Gather the stages' metrics files (stage name -> path) into the final table."""
    table_rows = []
    for stage, path in rows.items():
        metrics = read_json(path)
        missing = [k for k in ("valid", "test", "params") if k not in metrics]
        if missing:
            raise ValueError(f"{path}: metrics file lacks {missing}; rerun the {stage} rule")
        row = {"stage": stage, **{k: metrics.get(k) for k in ROW_KEYS if k != "stage"}}
        row["valid"] = {k: metrics["valid"][k] for k in METRIC_NAMES}
        row["test"] = {k: metrics["test"][k] for k in METRIC_NAMES}
        table_rows.append(row)
    by_stage = {row["stage"]: row for row in table_rows}
    speedup = None
    if "teacher" in by_stage and "student" in by_stage:
        teacher, student = by_stage["teacher"], by_stage["student"]
        speedup = {
            "teacher": teacher["model"],
            "student": student["model"],
            "train": teacher["train_seconds"] / max(student["train_seconds"], 1e-9),
            "inference": teacher["inference_seconds"] / max(student["inference_seconds"], 1e-9),
            "paper_reference": {"train": 6.6, "inference": 8.0, "teacher_layers": 32},
        }
    return {"dataset": dataset, "stats": read_json(stats_path), "rows": table_rows, "speedup": speedup}


def _accuracy_markdown(rows: list[dict[str, Any]], split: str) -> str:
    header = "| Model | " + " | ".join(TABLE_METRICS) + " |\n|---|" + "---:|" * len(TABLE_METRICS) + "\n"
    lines = [f"| {r['model']} | " + " | ".join(f"{r[split][m]:.2f}" for m in TABLE_METRICS) + " |" for r in rows]
    return header + "\n".join(lines) + "\n"


def _efficiency_markdown(rows: list[dict[str, Any]]) -> str:
    header = "| Model | Layers | Params (total) | Trainable | At inference | Train time (s) | Inference time (s) |\n"
    header += "|---|---:|---:|---:|---:|---:|---:|\n"
    lines = [
        f"| {r['model']} | {r.get('layers') or '-'} | {r['params']['total']:,} | {r['params']['trainable']:,} | "
        f"{r['params']['inference']:,} | {r['train_seconds']:.1f} | {r['inference_seconds']:.2f} |"
        for r in rows
    ]
    return header + "\n".join(lines) + "\n"


def _figure(**options: Any) -> tuple[Any, Any]:
    """A matplotlib figure drawn off-screen (jobs run on machines without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(**options)


def _save(fig: Any, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_training_curves(logs: dict[str, str | Path], path: str | Path) -> None:
    """Loss terms and validation MRR per step for each trained LLM model."""
    fig, (loss_ax, mrr_ax) = _figure(ncols=2, figsize=(11, 4))
    for name, log_path in logs.items():
        log = pl.read_csv(log_path)
        if log.height == 0:
            continue
        for column in sorted(c for c in log.columns if c.startswith("loss")):
            loss_ax.plot(log["step"], log[column], marker=".", label=f"{name}: {column}")
        if "mrr" in log.columns:
            mrr_ax.plot(log["step"], log["mrr"], marker=".", label=name)
    loss_ax.set(title="training loss terms", xlabel="step", ylabel="loss")
    mrr_ax.set(title="validation MRR (%)", xlabel="step", ylabel="MRR")
    for ax in (loss_ax, mrr_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def plot_layer_sweep(
    points: dict[int, dict[str, float]], student: tuple[int, dict[str, float]] | None, path: str | Path
) -> None:
    """Test metrics against the number of decoder layers (E4SRec_l), with the distilled student marked."""
    fig, ax = _figure(figsize=(6, 4))
    layers = sorted(points)
    for metric in ("HR@10", "NDCG@10", "MRR"):
        line = ax.plot(layers, [points[n][metric] for n in layers], marker="o", label=f"E4SRec_l {metric}")
        if student is not None:
            ax.scatter([student[0]], [student[1][metric]], marker="*", s=160, color=line[0].get_color())
    ax.set(title="test metrics against decoder layers (star: SLMRec student)", xlabel="layers", ylabel="%")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def layer_sweep_points(table: dict[str, Any], sweep: dict[str, str | Path]) -> dict[int, dict[str, float]]:
    points = {int(re.sub(r"\D", "", stage)): read_json(path)["test"] for stage, path in sweep.items()}
    for row in table["rows"]:
        if row["stage"] == "teacher" and row.get("layers"):
            points.setdefault(row["layers"], row["test"])
    return points


def write_report(
    table: dict[str, Any],
    path: str | Path,
    curves_png: str | Path,
    layers_png: str | Path,
    synthetic_backbone: bool,
    ablation: dict[str, Any] | None = None,
) -> None:
    stats = table["stats"]
    rows = table["rows"]
    parts = [f"# slmrec results: {table['dataset']}\n"]
    if synthetic_backbone:
        parts.append(
            "> **The LLM backbone here is a randomly initialised miniature LLaMA** (the `tiny` preset), built "
            "locally because no pretrained weights can be downloaded where this ran. These figures show that "
            "the pipeline works end to end; they say nothing about the value of LLM pretraining.\n"
        )
    parts.append(
        "## Dataset\n\n| Users | Items | Interactions | Density | k-core iterations |\n|---:|---:|---:|---:|---:|\n"
        f"| {stats['users']:,} | {stats['items']:,} | {stats['interactions']:,} | {stats['density']:.5f} | "
        f"{stats['kcore_iterations']} |\n"
    )
    parts.append(
        "## Test metrics (%, 1 positive + stored negatives; Table 2 layout)\n\n" + _accuracy_markdown(rows, "test")
    )
    parts.append("## Validation metrics (%)\n\n" + _accuracy_markdown(rows, "valid"))
    parts.append("## Efficiency (Table 5 layout)\n\n" + _efficiency_markdown(rows))
    speedup = table.get("speedup")
    if speedup:
        parts.append(
            f"Student speed-up over the teacher ({speedup['student']} vs {speedup['teacher']}): "
            f"**{speedup['train']:.1f}x** training, **{speedup['inference']:.1f}x** inference "
            "(the paper reports 6.6x and 8.0x against a 32-layer LLaMA-7B teacher on an A100).\n"
        )
    if ablation:
        parts.append("## Ablation (Table 4 layout, test %)\n\n" + _accuracy_markdown(ablation["rows"], "test"))
    parts.append(f"## Training curves\n\n![training curves]({Path(curves_png).name})\n")
    parts.append(f"## Layers\n\n![test metrics against layers]({Path(layers_png).name})\n")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))


def ablation_table(rows: dict[str, str | Path]) -> dict[str, Any]:
    """The Table 4 variants side by side (valid and test metrics, and the weights used)."""
    out = []
    for variant, path in rows.items():
        metrics = read_json(path)
        out.append(
            {
                "variant": variant,
                "model": metrics["model"],
                "distill": metrics.get("distill"),
                "valid": {k: metrics["valid"][k] for k in METRIC_NAMES},
                "test": {k: metrics["test"][k] for k in METRIC_NAMES},
            }
        )
    return {"rows": out}


def write_ablation(rows: dict[str, str | Path], path: str | Path) -> dict[str, Any]:
    table = ablation_table(rows)
    write_json(path, table)
    return table


def run_metrics(dataset: str, rows: dict[str, str], stats_path: str, output: Any) -> dict[str, Any]:
    """The `metrics` rule: the table, and a manifest linking it to every stage behind it."""
    started = utc_now()
    table = metrics_table(dataset, rows, stats_path)
    write_json(output.table, table)
    write_manifest(
        output.manifest,
        stage="metrics",
        config={"rows": list(rows)},
        inputs=[*rows.values(), stats_path],
        outputs=[output.table],
        started=started,
    )
    return table
