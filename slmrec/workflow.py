"""Glue between Snakemake's `script:` directive and the library: logging into the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any


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


def llm_stage_arguments(snakemake: Any) -> dict[str, Any]:
    """What the teacher and student rules hand their stage alike: inputs, shared settings, outputs, resources."""
    return {
        "splits_path": snakemake.input.splits,
        "negatives_path": snakemake.input.negatives,
        "stats_path": snakemake.input.stats,
        "item_embeddings_path": snakemake.input.item_embeddings,
        "backbone_dir": snakemake.input.backbone,
        "backbone": snakemake.params.backbone,
        "prompt": snakemake.params.prompt,
        "max_len": snakemake.params.max_len,
        "eval_cfg": snakemake.params.evaluate,
        "output": dict(snakemake.output.items()),
        "checkpoint_dir": snakemake.params.checkpoints,
        "eval_batch_size": snakemake.resources.eval_batch_size,
        "per_device_batch_size": snakemake.resources.per_device_batch_size,
    }
