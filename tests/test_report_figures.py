"""The report's settings section and its figures, drawn from small hand-made inputs (no Snakemake run)."""

from __future__ import annotations

import polars as pl
import pytest

from slmrec.metrics import METRIC_NAMES
from slmrec.report import layer_sweep_figure, training_curves_figure, write_report

SCORES = {metric: 10.0 for metric in METRIC_NAMES}
SETTINGS = {
    "source": {"seed": 7},
    "negatives": {"num_negatives": 99, "seed": 2025},
    "sasrec": {"hidden": 32, "layers": 1, "seed": 42},
    "backbone": {"path": None, "preset": "tiny", "init": "pretrained", "dtype": "float32", "quantization": "none"},
    "teacher": {"layers": 4, "seed": 42},
    "student": {"layers": 2, "seed": 43},
    "distill": {"blocks": 2, "cos_weight": 1.0, "l2_weight": 0.25, "multi_supervision_weight": 0.1},
    "report": {"layer_sweep": []},
}


def row(model: str, target: str, layers: int | None) -> dict:
    params = {"total": 10, "trainable": 1, "inference": 10}
    return {
        "model": model,
        "target": target,
        "layers": layers,
        "valid": SCORES,
        "test": SCORES,
        "params": params,
        "train_seconds": 1.0,
        "inference_seconds": 0.1,
        "best_step": None,
        "best_valid_mrr": None,
        "details": {},
    }


def test_the_report_lists_every_weight_k_the_layers_the_backbone_and_the_seeds(tmp_path):
    stats = {"users": 10, "items": 20, "interactions": 50, "density": 0.25, "kcore_iterations": 2}
    table = {"dataset": "demo", "stats": stats, "rows": [row("E4SRec_4", "teacher", 4)], "speedup": None}
    path = tmp_path / "report.md"
    write_report(table, path, tmp_path / "curves.png", tmp_path / "layers.png", "tiny", SETTINGS)
    report = path.read_text()
    assert "## Test metrics (%, 1 positive + 99 stored negatives; Table 2 layout)" in report
    settings = report[report.index("## Settings") : report.index("## Test metrics")]
    for key, value in [
        ("distill.cos_weight", "1.0"),
        ("distill.l2_weight", "0.25"),
        ("distill.multi_supervision_weight", "0.1"),
        ("negatives.num_negatives", "99"),
        ("teacher.layers", "4"),
        ("student.layers", "2"),
        ("report.layer_sweep", "[]"),
        ("backbone.path", "null"),
        ("backbone.preset", "tiny"),
        ("source.seed", "7"),
        ("negatives.seed", "2025"),
        ("sasrec.seed", "42"),
        ("student.seed", "43"),
    ]:
        assert f"| `{key}` | `{value}` |" in settings, key
    assert "λ2, weight of the L2 alignment term" in settings
    # A downloaded source has no data seed, and the row is left out rather than shown empty.
    without_seed = {**SETTINGS, "source": {}}
    write_report(table, path, tmp_path / "curves.png", tmp_path / "layers.png", "", without_seed)
    assert "source.seed" not in path.read_text()


@pytest.mark.parametrize(
    ("backbone", "says"),
    [
        ("tiny", ["randomly initialised miniature LLaMA", "docs/experiments.md"]),
        ("init", ["Control: the backbone's weights are random", "`backbone.init: random`"]),
        ("", []),
    ],
)
def test_the_report_says_when_the_backbone_has_no_pretraining(tmp_path, backbone, says):
    stats = {"users": 10, "items": 20, "interactions": 50, "density": 0.25, "kcore_iterations": 2}
    table = {"dataset": "d", "stats": stats, "rows": [row("E4SRec_4", "teacher", 4)], "speedup": None}
    path = tmp_path / "report.md"
    write_report(table, path, tmp_path / "curves.png", tmp_path / "layers.png", backbone, SETTINGS)
    report = path.read_text()
    for text in says:
        assert text in report
    if not says:
        assert "random" not in report.split("## Settings")[0]


def test_a_single_depth_is_a_marker_on_an_integer_tick_and_says_how_to_sweep():
    student = ("SLMRec 2←4", 2, SCORES)
    fig = layer_sweep_figure({4: SCORES}, student)
    (ax,) = fig.axes
    assert list(ax.get_xticks()) == [2, 4]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["E4SRec_l MRR"].get_linestyle() == "None" and lines["E4SRec_l MRR"].get_marker() == "o"
    assert lines["SLMRec 2←4 MRR"].get_linestyle() == "None"
    notes = " ".join(text.get_text() for text in ax.texts)
    assert "report.layer_sweep" in notes


def test_a_sweep_is_drawn_as_lines_on_its_depths():
    direct = {"teacher": "E4SRec_4", "layers": {str(k): {"test": SCORES} for k in (1, 2, 4)}}
    fig = layer_sweep_figure({1: SCORES, 2: SCORES, 4: SCORES}, None, direct)
    (ax,) = fig.axes
    assert list(ax.get_xticks()) == [1, 2, 4]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["E4SRec_l MRR"].get_linestyle() == "-"
    assert lines["direct from E4SRec_4 MRR"].get_linestyle() == "--"
    assert not ax.texts


def test_training_curves_weight_each_term_on_its_own_log_scale_panel():
    steps = [50, 100]
    logs = {
        "teacher": pl.DataFrame({"step": steps, "loss": [7.0, 6.0], "mrr": [5.0, 6.0]}),
        "student": pl.DataFrame(
            {
                "step": steps,
                "loss": [9.0, 8.0],
                "loss_ce": [7.0, 6.5],
                "loss_cos": [0.5, 0.1],
                "loss_l2": [4.0, 2.0],
                "loss_ms": [20.0, 19.0],
                "mrr": [4.0, 5.0],
            }
        ),
    }
    weights = {"student": {"cos_weight": 1.0, "l2_weight": 0.1, "multi_supervision_weight": 0.01}}
    total_ax, terms_ax, mrr_ax = training_curves_figure(logs, weights).axes
    assert "weighted total" in total_ax.get_title() and "weighted (λ × term)" in terms_ax.get_title()
    assert terms_ax.get_yscale() == "log" and total_ax.get_yscale() == "linear"
    terms = {line.get_label(): list(line.get_ydata()) for line in terms_ax.get_lines()}
    assert terms["student: 0.1 × L2"] == pytest.approx([0.4, 0.2])
    assert terms["student: 0.01 × MS"] == pytest.approx([0.2, 0.19])
    assert terms["student: 1 × cos"] == pytest.approx([0.5, 0.1])
    totals = {line.get_label() for line in total_ax.get_lines()}
    assert totals == {"teacher: total (weighted sum)", "student: total (weighted sum)", "student: CE (weight 1)"}
    assert {line.get_label() for line in mrr_ax.get_lines()} == {"teacher", "student"}
    # Without its weights a term is drawn as logged, and labelled raw.
    _, terms_ax, _ = training_curves_figure(logs, {}).axes
    assert "student: L2 (raw)" in {line.get_label() for line in terms_ax.get_lines()}
