"""Run a training stage in this process, or data-parallel under torchrun when a job has several devices.

Snakemake's `script:` starts one Python process; a rule with `gpu: N > 1` re-launches the same stage
function as N torchrun workers (NCCL on GPUs, gloo on CPUs), which `transformers.Trainer` picks up
as distributed data parallel. Arguments travel as a JSON file.
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
from types import SimpleNamespace
from typing import Any

logger = logging.getLogger(__name__)


def _call(target: str, kwargs: dict[str, Any]) -> Any:
    module, _, name = target.partition(":")
    function = getattr(importlib.import_module(module), name)
    return function(**{**kwargs, "output": SimpleNamespace(**kwargs["output"])})


def launch(target: str, kwargs: dict[str, Any], processes: int = 1, log_path: str | None = None) -> Any:
    """Call `module:function(**kwargs)`; `kwargs["output"]` is a dict of named output paths."""
    if processes <= 1:
        return _call(target, kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        arguments = Path(tmp) / "arguments.json"
        arguments.write_text(json.dumps({"target": target, "kwargs": kwargs}))
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
    spec = json.loads(Path(path).read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _call(spec["target"], spec["kwargs"])


if __name__ == "__main__":
    main()
