"""The per-dataset results: one metrics table (`metrics.json`) and a readable report (`report.md`).

The table has a row per model, laid out like the paper's Table 2 (accuracy) and Table 5
(efficiency), and ends with the student's speed-ups over the teacher.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from slmrec import markdown
from slmrec.io import atomic_path, read_artifact, read_json
from slmrec.metrics import METRIC_NAMES, MetricsRow
from slmrec.targets import CE_LOG_KEY, LOSS_TERMS, TEACHER, TEACHER_CE_LOG_KEY, trained_label

SWEEP_METRICS = ("HR@10", "NDCG@10", "MRR")

# The settings section of a report: (dotted key, what it is). A key the dataset does not have (the data
# seed of a downloaded source) is left out.
PAPER_SPEEDUP = {"train": 6.6, "inference": 8.0, "teacher_layers": 32}  # Table 5: SLMRec 4 over E4SRec_32
REPORTED_SETTINGS = (
    ("distill.cos_weight", "λ1, weight of the cosine alignment term"),
    ("distill.l2_weight", "λ2, weight of the L2 alignment term"),
    ("distill.multi_supervision_weight", "λ3, weight of multiple supervision"),
    ("distill.blocks", "n, blocks aligned between teacher and student"),
    ("negatives.num_negatives", "K, negatives ranked against each positive"),
    ("teacher.layers", "l, teacher decoder layers"),
    ("student.layers", "m, student decoder layers"),
    ("report.layer_sweep", "E4SRec_l depths swept"),
    ("sasrec.hidden", "d, SASRec item-embedding size"),
    ("sasrec.layers", "SASRec blocks"),
    ("backbone.path", "backbone checkpoint (null: the preset)"),
    ("backbone.preset", "backbone preset"),
    ("backbone.init", "backbone weights"),
    ("backbone.dtype", "backbone dtype"),
    ("backbone.quantization", "backbone quantization"),
    ("source.seed", "seed of the synthetic data"),
    ("negatives.seed", "seed of the negatives"),
    ("sasrec.seed", "seed of SASRec"),
    ("teacher.seed", "seed of the teacher"),
    ("student.seed", "seed of the students"),
    ("backbone.seed", "seed of a random backbone (the tiny preset, init: random)"),
)


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
            "paper_reference": PAPER_SPEEDUP,
        }
    return {"dataset": dataset, "stats": read_artifact(stats_path, read_json), "rows": table_rows, "speedup": speedup}


def _accuracy_markdown(rows: list[dict[str, Any]], split: str) -> str:
    lines = [[r["model"], *(f"{r[split][m]:.2f}" for m in METRIC_NAMES)] for r in rows]
    return markdown.table(["Model", *METRIC_NAMES], lines)


def _efficiency_markdown(rows: list[dict[str, Any]]) -> str:
    header = ["Model", "Layers", "Params (total)", "Trainable", "At inference", "Train time (s)", "Inference time (s)"]
    lines = [
        [
            r["model"],
            str(r.get("layers") or "-"),
            *(f"{r['params'][k]:,}" for k in ("total", "trainable", "inference")),
            f"{r['train_seconds']:.1f}",
            f"{r['inference_seconds']:.2f}",
        ]
        for r in rows
    ]
    text = markdown.table(header, lines)
    paths = [f"- {r['model']}: {', '.join(r['details']['speedups'])}" for r in rows if r["details"].get("speedups")]
    if paths:
        text += "\nTimes are measured on the optimised paths:\n\n" + "\n".join(paths) + "\n"
    return text


def setting_text(value: Any) -> str:
    """A setting as it is written in config.yaml (null, true, [1, 2])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(setting_text(v) for v in value) + "]"
    return str(value)


def _settings_markdown(settings: dict[str, dict[str, Any]]) -> str:
    """The settings the figures were made with, by their config.yaml keys."""
    lines = []
    for key, meaning in REPORTED_SETTINGS:
        section, name = key.split(".")
        if name in settings.get(section, {}):
            lines.append([meaning, f"`{key}`", f"`{setting_text(settings[section][name])}`"])
    return markdown.table(["Setting", "Key", "Value"], lines, text_columns=3)


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
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def training_curves_figure(logs: dict[str, pl.DataFrame], weights: dict[str, dict[str, float]]) -> Any:
    """Per trained model (by target): what is optimised (the weighted total, and the cross-entropy terms it adds
    with weight 1), each distillation term times its λ (`weights`: a student's distill settings; a term whose
    λ is unknown is drawn raw and labelled so), and validation MRR. Each panel has its own scale, the terms' a
    log scale, because the terms differ by orders of magnitude."""
    fig, (total_ax, terms_ax, mrr_ax) = _figure(ncols=3, figsize=(15, 4.2))
    for name, log in logs.items():
        if log.height == 0:
            continue
        (total,) = total_ax.plot(log["step"], log["loss"], marker=".", label=f"{name}: total (weighted sum)")
        for key, label, style in ((CE_LOG_KEY, "CE", "--"), (TEACHER_CE_LOG_KEY, "teacher CE", ":")):
            if key in log.columns:
                total_ax.plot(
                    log["step"], log[key], color=total.get_color(), linestyle=style, label=f"{name}: {label} (weight 1)"
                )
        for term in LOSS_TERMS:
            if term.log_key not in log.columns:
                continue
            weight = weights.get(name, {}).get(term.weight_key)
            if weight is None:
                terms_ax.plot(log["step"], log[term.log_key], marker=".", label=f"{name}: {term.label} (raw)")
            else:
                terms_ax.plot(
                    log["step"], log[term.log_key] * weight, marker=".", label=f"{name}: {weight:g} × {term.label}"
                )
        if "mrr" in log.columns:
            mrr_ax.plot(log["step"], log["mrr"], marker=".", label=name)
    total_ax.set(title="loss optimised: weighted total, and CE", xlabel="step", ylabel="loss")
    terms_ax.set(title="distillation terms, weighted (λ × term)", xlabel="step", ylabel="λ × term (log scale)")
    mrr_ax.set(title="validation MRR (%)", xlabel="step", ylabel="MRR")
    if terms_ax.lines:
        terms_ax.set_yscale("log")
    else:
        terms_ax.text(
            0.5, 0.5, "no distillation terms\n(no student trained)", ha="center", transform=terms_ax.transAxes
        )
    for ax in (total_ax, terms_ax, mrr_ax):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return fig


def plot_training_curves(logs: list[str | Path], path: str | Path, weights: dict[str, dict[str, float]]) -> None:
    """`training_curves_figure` of the models whose `train_log.csv` files are `logs` (named by their directory)."""
    frames = {Path(log).parent.name: pl.read_csv(log) for log in logs}
    _save(training_curves_figure(frames, weights), path)


def layer_sweep_figure(
    points: dict[int, dict[str, float]],
    student: tuple[str, int, dict[str, float]] | None,
    direct: dict[str, Any] | None = None,
) -> Any:
    """Test metrics against the number of decoder layers (E4SRec_l), the distilled student (name, layers, test
    metrics) starred and, dashed, direct inference from the trained deep teacher's intermediate layers
    (Figure 2). A series of one point is a marker without a line; with one depth only, the plot says how to
    sweep more."""
    fig, ax = _figure(figsize=(8.5, 4.2))
    layers = sorted(points)
    depths = sorted(int(k) for k in direct["layers"]) if direct else []

    def line(count: int, style: str = "-") -> str:
        return style if count > 1 else "none"

    for metric in SWEEP_METRICS:
        (drawn,) = ax.plot(
            layers,
            [points[n][metric] for n in layers],
            marker="o",
            linestyle=line(len(layers)),
            label=f"E4SRec_l {metric}",
        )
        color = drawn.get_color()
        if student is not None:
            name, depth, test = student
            ax.plot(
                [depth],
                [test[metric]],
                marker="*",
                markersize=14,
                linestyle="none",
                color=color,
                label=f"{name} {metric}",
            )
        if direct is not None:
            scores = [direct["layers"][str(k)]["test"][metric] for k in depths]
            ax.plot(
                depths,
                scores,
                linestyle=line(len(depths), "--"),
                marker="x",
                color=color,
                label=f"direct from {direct['teacher']} {metric}",
            )
    ax.set_xticks(sorted(set(layers) | set(depths) | ({student[1]} if student else set())))
    if len(points) < 2:
        ax.text(
            0.5,
            0.5,
            "one depth only: set report.layer_sweep in config.yaml,\ne.g. report: {layer_sweep: [1, 2, 4, 8]},\n"
            "to train E4SRec_l at more depths",
            ha="center",
            va="center",
            fontsize=8,
            transform=ax.transAxes,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8},
        )
    ax.set(title="test metrics against decoder layers", xlabel="decoder layers", ylabel="%")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the plot: the lines cross its area
    return fig


def plot_layer_sweep(
    points: dict[int, dict[str, float]],
    student: tuple[str, int, dict[str, float]] | None,
    path: str | Path,
    direct: dict[str, Any] | None = None,
) -> None:
    _save(layer_sweep_figure(points, student, direct), path)


def figure2_table(trained: dict[int, dict[str, float]], direct: dict[int, dict[str, float]]) -> str:
    """Figure 2's numbers, test metrics by depth: each depth trained as its own E4SRec_l, and the deep teacher
    read directly at that layer (through its final norm and output projection, nothing retrained)."""
    metrics = ("NDCG@10", "MRR")
    lines = [
        [str(k), *(f"{source[k][m]:.2f}" if k in source else "-" for source in (trained, direct) for m in metrics)]
        for k in sorted(set(trained) | set(direct))
    ]
    header = ["Layers", *(f"{kind} {m}" for kind in ("trained", "direct") for m in metrics)]
    return markdown.table(header, lines)


def direct_points(direct: dict[str, Any]) -> dict[int, dict[str, float]]:
    """Test metrics by depth of a `direct_inference.json`."""
    return {int(k): v["test"] for k, v in direct["layers"].items()}


def layer_sweep_points(table: dict[str, Any], sweep: list[str | Path]) -> dict[int, dict[str, float]]:
    """Test metrics by layer count: the sweep's E4SRec_l teachers and the table's teacher."""
    rows = [MetricsRow.read(path) for path in sweep]
    points = {row.layers: row.test for row in rows if row.layers is not None}
    for row in table["rows"]:
        if row["target"] == TEACHER:
            points.setdefault(row["layers"], row["test"])
    return points


def write_report(
    table: dict[str, Any],
    path: str | Path,
    curves_png: str | Path,
    layers_png: str | Path,
    random_backbone: str,
    settings: dict[str, dict[str, Any]],
    ablation: dict[str, Any] | None = None,
    layers: tuple[dict[int, dict[str, float]], dict[str, Any]] | None = None,
    compared: str = "",
) -> None:
    """`settings`: the config sections the report lists (`REPORTED_SETTINGS`); `layers`: the layer sweep's test
    metrics by depth and the direct-inference results, when swept; `compared`: the per-user comparisons' table."""
    stats = table["stats"]
    rows = table["rows"]
    parts = [f"# slmrec results: {table['dataset']}\n"]
    if random_backbone == "tiny":
        parts.append(
            "> **The LLM backbone here is a randomly initialised miniature LLaMA** (the `tiny` preset), built "
            "locally because no pretrained weights can be downloaded where this ran. These figures show that "
            "the pipeline works end to end; they say nothing about the value of LLM pretraining. For results on "
            "a real pretrained backbone (SmolLM2-135M on MovieLens-100K), see docs/experiments.md.\n"
        )
    elif random_backbone == "init":
        parts.append(
            "> **Control: the backbone's weights are random** (`backbone.init: random`): the pretrained model's "
            "architecture without its pretraining. Set beside the same chain on the pretrained weights, it shows "
            "what pretraining is worth.\n"
        )
    parts.append(
        "## Dataset\n\n| Users | Items | Interactions | Density | k-core iterations |\n|---:|---:|---:|---:|---:|\n"
        f"| {stats['users']:,} | {stats['items']:,} | {stats['interactions']:,} | {stats['density']:.5f} | "
        f"{stats['kcore_iterations']} |\n"
    )
    parts.append("## Settings\n\n" + _settings_markdown(settings))
    negatives = settings["negatives"]["num_negatives"]
    parts.append(
        f"## Test metrics (%, 1 positive + {negatives} stored negatives; Table 2 layout)\n\n"
        + _accuracy_markdown(rows, "test")
    )
    parts.append("## Validation metrics (%)\n\n" + _accuracy_markdown(rows, "valid"))
    parts.append("## Efficiency (Table 5 layout)\n\n" + _efficiency_markdown(rows))
    speedup = table.get("speedup")
    if speedup:
        parts.append(
            f"Student speed-up over the teacher ({speedup['student']} vs {speedup['teacher']}): "
            f"**{speedup['train']:.1f}x** training, **{speedup['inference']:.1f}x** inference "
            f"(the paper reports {PAPER_SPEEDUP['train']}x and {PAPER_SPEEDUP['inference']}x against a "
            f"{PAPER_SPEEDUP['teacher_layers']}-layer LLaMA-7B teacher on an A100).\n"
        )
    if ablation:
        parts.append("## Ablation (Table 4 layout, test %)\n\n" + _accuracy_markdown(ablation["rows"], "test"))
    if compared:
        parts.append(
            "## Paired comparisons (per user)\n\nEach student against its own teacher and, with the ablation, "
            "against its CE-only twin: the mean over users of A − B in points, its 95% paired-bootstrap interval "
            'and the randomization p-value. "holds" needs both intervals on one side of zero and p < 0.05 on both '
            "splits.\n\n" + compared
        )
    parts.append(f"## Training curves\n\n![training curves]({Path(curves_png).name})\n")
    parts.append(f"## Layers\n\n![test metrics against layers]({Path(layers_png).name})\n")
    if layers is not None:
        parts.append(
            "Direct inference reads the trained deep teacher after its first k layers (through its final norm "
            "and output projection, nothing retrained), beside E4SRec_l trained at each depth (Figure 2):\n\n"
            + figure2_table(layers[0], direct_points(layers[1]))
        )
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))


def gather_ablation(rows: dict[str, str | Path]) -> dict[str, Any]:
    """The Table 4 variants side by side (variant -> metrics path; `all` is the offline student's row)."""
    out = []
    for variant, path in rows.items():
        row = MetricsRow.read(path)
        out.append(
            {
                "variant": variant,
                "model": trained_label(variant, row.details.get("distill")),
                "trained_as": row.model,
                "distill": row.details.get("distill"),
                "valid": row.valid,
                "test": row.test,
            }
        )
    return {"rows": out}
