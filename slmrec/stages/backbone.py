"""The `backbone` stage: build a preset checkpoint (randomly initialised) and its tokenizer locally."""

from __future__ import annotations

from slmrec.call import StageCall
from slmrec.io import atomic_dir
from slmrec.models.presets import build_preset


def run(call: StageCall) -> None:
    prompt = call.params["prompt"]
    with atomic_dir(call.output["directory"]) as directory:
        build_preset(call.params["preset"], directory, [prompt["prefix"], prompt["suffix"]], call.params["seed"])
    call.write_directory_manifest(call.output["directory"])
