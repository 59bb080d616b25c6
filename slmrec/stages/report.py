"""The `report` stage: report.md with the tables, the dataset statistics and the figures."""

from __future__ import annotations

from slmrec.call import StageCall
from slmrec.io import read_artifact, read_json
from slmrec.report import layer_sweep_points, plot_layer_sweep, plot_training_curves, write_report
from slmrec.targets import STUDENT


def run(call: StageCall) -> None:
    table = read_artifact(call.input["table"], read_json)
    student = next((row for row in table["rows"] if row["target"] == STUDENT), None)
    plot_training_curves(call.input["train_logs"], call.output["curves"])
    plot_layer_sweep(
        layer_sweep_points(table, call.input["sweep"]),
        (student["layers"], student["test"]) if student else None,
        call.output["layers"],
    )
    ablation = read_artifact(call.input["ablation"], read_json) if "ablation" in call.input else None
    write_report(
        table, call.output["report"], call.output["curves"], call.output["layers"], call.params["synthetic"], ablation
    )
