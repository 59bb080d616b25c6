"""Glue between Snakemake's `script:` directive and the library: logging into the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator


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
