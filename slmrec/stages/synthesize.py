"""The `synthesize` stage: the demo's deterministic review file in the Amazon 2018 format."""

from __future__ import annotations

from slmrec.call import StageCall
from slmrec.data.synthetic import write_synthetic_reviews


def run(call: StageCall) -> None:
    options = {k: v for k, v in call.params["source"].items() if k != "kind"}
    count = write_synthetic_reviews(call.output["raw"], **options)
    call.write_manifest(extra={"reviews": count})
