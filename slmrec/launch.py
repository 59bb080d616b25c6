"""Run a stage in this process, or data-parallel under torchrun when a job has several devices.

Snakemake's `script:` starts one Python process; a rule with `gpu: N > 1` re-launches the same stage
as N torchrun workers (NCCL on GPUs, gloo on CPUs), which `transformers.Trainer` picks up as
distributed data parallel. The stage call travels as a JSON file.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from slmrec.call import StageCall

logger = logging.getLogger(__name__)


def call_stage(call: StageCall) -> Any:
    return importlib.import_module(f"slmrec.stages.{call.stage}").run(call)


def launch(call: StageCall, processes: int = 1, log_path: str | None = None) -> Any:
    """Run the call's stage; with several processes the main one only waits, and returns None."""
    if processes <= 1:
        return call_stage(call)
    with tempfile.TemporaryDirectory() as tmp:
        arguments = Path(tmp) / "call.json"
        arguments.write_text(json.dumps(call.to_json()))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            "slmrec.launch",
            str(arguments),
        ]
        logger.info("launching %d processes: %s", processes, " ".join(command))
        with open(log_path, "a") if log_path else contextlib.nullcontext() as log:
            try:
                subprocess.run(command, check=True, stdout=log, stderr=log)
            except subprocess.CalledProcessError as failed:
                raise worker_error(Path(tmp)) or failed from failed
    return None


def worker_error(folder: Path) -> Exception | None:
    """The error a worker recorded in `folder` before it failed, raised again in the launching process with its own
    type, so that bad input (a DataError, a NonFiniteLossError) stays bad input and is not retried; None if no
    worker recorded one (it was killed)."""
    for record in sorted(folder.glob("*.error.json")):
        error = json.loads(record.read_text())
        kind = getattr(importlib.import_module(error["module"]), error["name"], None)
        if isinstance(kind, type) and issubclass(kind, Exception):
            return kind(error["message"])
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point of each torchrun worker; a failing worker records its error beside the call (`worker_error`)."""
    (path,) = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        call_stage(StageCall(**json.loads(Path(path).read_text())))
    except Exception as error:
        record = {"module": type(error).__module__, "name": type(error).__qualname__, "message": str(error)}
        Path(f"{path}.rank{os.environ.get('RANK', '0')}.error.json").write_text(json.dumps(record))
        raise


if __name__ == "__main__":
    main()
