"""The `convert_backbone` stage: a GGUF file, or a randomly initialised control, as a checkpoint directory."""

from __future__ import annotations

from slmrec.call import StageCall
from slmrec.io import atomic_dir
from slmrec.models.conversion import convert


def run(call: StageCall) -> None:
    with atomic_dir(call.output["directory"]) as directory:
        convert(call.input["source"], directory, call.params["init"], call.params["seed"])
    call.write_directory_manifest(call.output["directory"])
