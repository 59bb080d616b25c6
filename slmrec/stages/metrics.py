"""The `metrics` stage: one table with a row per model, and the student's speed-ups over its teacher."""

from __future__ import annotations

from typing import Any

from slmrec.call import StageCall
from slmrec.io import write_json
from slmrec.report import metrics_table


def run(call: StageCall) -> dict[str, Any]:
    rows = {target: path for target, path in call.input.items() if target != "stats"}
    table = metrics_table(call.params["dataset"], rows, call.input["stats"], tuple(call.params["headline"]))
    write_json(call.output["table"], table)
    call.write_manifest()
    return table
