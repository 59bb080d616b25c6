"""Glue between Snakemake's `script:` directive and the stages: logging into the rule's log, and the call."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from slmrec.call import StageCall
from slmrec.launch import launch


@contextlib.contextmanager
def rule_logging(log_path: str | os.PathLike) -> Iterator[logging.Logger]:
    """Send logging, warnings, stdout and stderr (progress bars) to the rule's log, with any failing traceback."""
    logger = logging.getLogger("slmrec")
    with open(log_path, "a", buffering=1) as log, contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        try:
            yield logger
        except BaseException:
            logger.exception("rule failed")
            raise
        finally:
            root.removeHandler(handler)


def run_stage(snakemake: Any, stage: str) -> Any:
    """A rule's whole script: call `slmrec.stages.<stage>.run` with the rule's inputs, outputs, params and
    resources, logging into the rule's log; a rule with `gpu: N > 1` runs it as N data-parallel workers."""
    call = StageCall.from_snakemake(snakemake, stage)
    with rule_logging(snakemake.log[0]):
        return launch(call, processes=int(call.resources.get("gpu", 1)), log_path=snakemake.log[0])
