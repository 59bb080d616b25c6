"""The per-dataset results: one metrics table (`metrics.json`) and a readable report (`report.md`).

The table has a row per model, laid out like the paper's Table 2 (accuracy) and Table 5
(efficiency), and ends with the student's speed-ups over the teacher.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from slmrec.io import atomic_path, read_artifact, read_json
from slmrec.metrics import MetricsRow
from slmrec.targets import TEACHER, variant_label

TABLE_METRICS = ("HR@1", "HR@5", "NDCG@5", "HR@10", "NDCG@10", "MRR")


def metrics_table(
    dataset: str, rows: dict[str, str | Path], stats_path: str | Path, headline: tuple[str, str]
) -> dict[str, Any]:
    """Gather the stages' metrics rows (target -> path) into the final table, with the speed-ups of the
    headline student over its own teacher (`headline`: their targets)."""
    table_rows = [asdict(MetricsRow.read(path)) for path in rows.values()]
    by_target = {row["target"]: row for row in table_rows}
    speedup = None
    student_target, teacher_target = headline
    if student_target in by_target and teacher_target in by_target:
        teacher, student = by_target[teacher_target], by_target[student_target]
        speedup = {
            "teacher": teacher["model"],
            "student": student["model"],
            "train": teacher["train_seconds"] / max(student["train_seconds"], 1e-9),
            "inference": teacher["inference_seconds"] / max(student["inference_seconds"], 1e-9),
            "paper_reference": {"train": 6.6, "inference": 8.0, "teacher_layers": 32},
        }
    return {"dataset": dataset, "stats": read_artifact(stats_path, read_json), "rows": table_rows, "speedup": speedup}


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
    paths = [f"- {r['model']}: {', '.join(r['details']['speedups'])}" for r in rows if r["details"].get("speedups")]
    if paths:
        lines.append("\nTimes are measured on the optimised paths:\n\n" + "\n".join(paths))
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


def plot_training_curves(logs: list[str | Path], path: str | Path) -> None:
    """Loss terms and validation MRR per step for each trained LLM model (labelled by its target directory)."""
    fig, (loss_ax, mrr_ax) = _figure(ncols=2, figsize=(11, 4))
    for log_path in logs:
        name = Path(log_path).parent.name
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
    points: dict[int, dict[str, float]],
    student: tuple[int, dict[str, float]] | None,
    path: str | Path,
    direct: dict[str, Any] | None = None,
) -> None:
    """Test metrics against the number of decoder layers (E4SRec_l), with the distilled student marked and,
    dashed, direct inference from the trained deep teacher's intermediate layers (Figure 2)."""
    fig, ax = _figure(figsize=(6, 4))
    layers = sorted(points)
    for metric in ("HR@10", "NDCG@10", "MRR"):
        line = ax.plot(layers, [points[n][metric] for n in layers], marker="o", label=f"E4SRec_l {metric}")
        color = line[0].get_color()
        if student is not None:
            ax.scatter([student[0]], [student[1][metric]], marker="*", s=160, color=color)
        if direct is not None:
            depths = sorted(int(k) for k in direct["layers"])
            scores = [direct["layers"][str(k)]["test"][metric] for k in depths]
            ax.plot(depths, scores, linestyle="--", marker="x", color=color, label=f"direct from {direct['teacher']}")
    ax.set(title="test metrics against decoder layers (star: SLMRec student)", xlabel="layers", ylabel="%")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def _direct_markdown(points: dict[int, dict[str, float]], direct: dict[str, Any]) -> str:
    """Figure 2's numbers: each depth trained as E4SRec_l, and read out of the deep teacher untrained."""
    lines = [
        f"| Layers | E4SRec_l trained (test NDCG@10) | direct from {direct['teacher']} (test NDCG@10) |",
        "|---:|---:|---:|",
    ]
    for k in sorted(set(points) | {int(k) for k in direct["layers"]}):
        trained = f"{points[k]['NDCG@10']:.2f}" if k in points else "-"
        read = direct["layers"].get(str(k))
        untrained = f"{read['test']['NDCG@10']:.2f}" if read else "-"
        lines.append(f"| {k} | {trained} | {untrained} |")
    return "\n".join(lines) + "\n"


def layer_sweep_points(table: dict[str, Any], sweep: list[str | Path]) -> dict[int, dict[str, float]]:
    """Test metrics by layer count: the sweep's E4SRec_l teachers and the table's teacher."""
    rows = [MetricsRow.read(path) for path in sweep]
    points = {row.layers: row.test for row in rows}
    for row in table["rows"]:
        if row["target"] == TEACHER:
            points.setdefault(row["layers"], row["test"])
    return points


def write_report(
    table: dict[str, Any],
    path: str | Path,
    curves_png: str | Path,
    layers_png: str | Path,
    synthetic_backbone: bool,
    ablation: dict[str, Any] | None = None,
    layers: tuple[dict[int, dict[str, float]], dict[str, Any]] | None = None,
) -> None:
    """`layers`: the layer sweep's test metrics by depth and the direct-inference results, when swept."""
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
    if layers is not None:
        parts.append(
            "Direct inference reads the trained deep teacher after its first k layers (through its final norm "
            "and output projection, nothing retrained), beside E4SRec_l trained at each depth (Figure 2):\n\n"
            + _direct_markdown(*layers)
        )
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))


def ablation_table(rows: dict[str, str | Path]) -> dict[str, Any]:
    """The Table 4 variants side by side (variant -> metrics path; `all` is the offline student's row)."""
    out = []
    for variant, path in rows.items():
        row = MetricsRow.read(path)
        out.append(
            {
                "variant": variant,
                "model": variant_label(variant),
                "trained_as": row.model,
                "distill": row.details.get("distill"),
                "valid": row.valid,
                "test": row.test,
            }
        )
    return {"rows": out}
