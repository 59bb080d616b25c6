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
            subprocess.run(command, check=True, stdout=log, stderr=log)
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point of each torchrun worker."""
    (path,) = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    call_stage(StageCall(**json.loads(Path(path).read_text())))


if __name__ == "__main__":
    main()
