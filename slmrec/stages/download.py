"""The `download` stage: fetch the raw review file from the first mirror that answers, and record where from."""

from __future__ import annotations

from slmrec.call import StageCall
from slmrec.data.download import download


def run(call: StageCall) -> None:
    download(call.params["urls"], call.output["raw"], call.params["sha256"])
    call.write_manifest()
