"""The `ablation` stage: the Table 4 variants side by side."""

from __future__ import annotations

from typing import Any

from slmrec.call import StageCall
from slmrec.io import write_json
from slmrec.report import gather_ablation


def run(call: StageCall) -> dict[str, Any]:
    table = gather_ablation(call.input)
    write_json(call.output["table"], table)
    call.write_manifest()
    return table
