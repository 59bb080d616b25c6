"""Rule `report`: report.md with the tables, dataset statistics and figures."""

from slmrec.io import read_json
from slmrec.report import layer_sweep_points, plot_layer_sweep, plot_training_curves, write_report
from slmrec.workflow import rule_logging

s = snakemake
with rule_logging(s.log[0]):
    table = read_json(s.input.table)
    logs = {name.removeprefix("log_"): path for name, path in s.input.items() if name.startswith("log_")}
    sweep = {name: path for name, path in s.input.items() if name.startswith("teacher_l")}
    student = next((r for r in table["rows"] if r["stage"] == "student"), None)
    plot_training_curves(logs, s.output.curves)
    plot_layer_sweep(
        layer_sweep_points(table, sweep), (student["layers"], student["test"]) if student else None, s.output.layers
    )
    ablation = read_json(s.input.ablation) if "ablation" in s.input.keys() else None
    synthetic = not s.params.backbone["path"]
    write_report(table, s.output.report, s.output.curves, s.output.layers, synthetic, ablation)
