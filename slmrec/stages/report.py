"""The `report` stage: report.md with the tables, the dataset statistics and the figures."""

from __future__ import annotations

from slmrec.call import StageCall
from slmrec.io import read_artifact, read_json
from slmrec.report import layer_sweep_points, plot_layer_sweep, plot_training_curves, write_report


def run(call: StageCall) -> None:
    table = read_artifact(call.input["table"], read_json)
    headline = table["speedup"]["student"] if table["speedup"] else None
    student = next((row for row in table["rows"] if row["model"] == headline), None)
    plot_training_curves(call.input["train_logs"], call.output["curves"])
    points = layer_sweep_points(table, call.input["sweep"])
    direct = read_artifact(call.input["direct"], read_json) if "direct" in call.input else None
    plot_layer_sweep(points, (student["layers"], student["test"]) if student else None, call.output["layers"], direct)
    ablation = read_artifact(call.input["ablation"], read_json) if "ablation" in call.input else None
    write_report(
        table,
        call.output["report"],
        call.output["curves"],
        call.output["layers"],
        call.params["synthetic"],
        ablation,
        (points, direct) if direct else None,
    )
