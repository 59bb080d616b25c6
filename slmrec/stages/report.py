"""The `report` stage: report.md with the tables, the settings, the dataset statistics and the figures."""

from __future__ import annotations

from slmrec.call import StageCall
from slmrec.evaluate import read_ranks
from slmrec.io import read_artifact, read_json
from slmrec.report import layer_sweep_points, plot_layer_sweep, plot_training_curves, write_report
from slmrec.stats import compare_ranks, comparison_table
from slmrec.targets import ablation_target

COMPARED_METRICS = ("NDCG@10", "MRR")


def run(call: StageCall) -> None:
    table = read_artifact(call.input["table"], read_json)
    headline = table["speedup"]["student"] if table["speedup"] else None
    student = next((row for row in table["rows"] if row["model"] == headline), None)
    weights = {row["target"]: row["details"]["distill"] for row in table["rows"] if "distill" in row["details"]}
    plot_training_curves(call.input["train_logs"], call.output["curves"], weights)
    points = layer_sweep_points(table, call.input["sweep"])
    direct = read_artifact(call.input["direct"], read_json) if "direct" in call.input else None
    starred = (student["model"], student["layers"], student["test"]) if student else None
    plot_layer_sweep(points, starred, call.output["layers"], direct)
    ablation = read_artifact(call.input["ablation"], read_json) if "ablation" in call.input else None
    # K as drawn: the negatives stage lowers the configured K where the catalogue is too small for it.
    drawn = read_artifact(call.input["negatives"], read_json)["num_negatives"]
    settings = {
        **call.params["settings"],
        "negatives": {**call.params["settings"]["negatives"], "num_negatives": drawn},
    }
    ranks = {target: read_ranks(path) for target, path in zip(call.params["ranked"], call.input["ranks"], strict=True)}
    variants = {ablation_target(row["variant"]): row["model"] for row in (ablation or {"rows": []})["rows"]}
    models = {
        **variants,
        ablation_target("ce"): "CE-only twin",
        **{row["target"]: row["model"] for row in table["rows"]},
    }
    compared = [
        (f"{models.get(a, a)} − {models.get(b, b)}", compare_ranks([ranks[a]], [ranks[b]], COMPARED_METRICS))
        for a, b in call.params["comparisons"]
    ]
    write_report(
        table,
        call.output["report"],
        call.output["curves"],
        call.output["layers"],
        call.params["random_backbone"],
        settings,
        ablation,
        (points, direct) if direct else None,
        comparison_table(compared, COMPARED_METRICS) if compared else "",
    )
