"""The `convert_backbone` stage: a GGUF file (or its chunks), or a randomly initialised control, as a checkpoint
directory."""

from __future__ import annotations

from pathlib import Path

from slmrec.call import StageCall
from slmrec.io import atomic_dir
from slmrec.models.conversion import assembled, convert


def run(call: StageCall) -> None:
    source, init, seed = call.input["source"], call.params["init"], call.params["seed"]
    with atomic_dir(call.output["directory"]) as directory:
        if "sha256sums" in call.input:  # a chunked preset
            with assembled([Path(p) for p in source], Path(call.input["sha256sums"]), Path(directory)) as gguf:
                convert(gguf, directory, init, seed)
        else:
            convert(source, directory, init, seed)
    call.write_directory_manifest(call.output["directory"])
