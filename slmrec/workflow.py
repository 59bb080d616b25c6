"""Glue between Snakemake's `script:` directive and the stages: logging into the rule's log, the call, and a
watchdog that stops the stage when Snakemake itself is killed."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from slmrec.call import StageCall
from slmrec.cluster import BAD_INPUT_EXIT_CODE, record_bad_input
from slmrec.errors import BAD_INPUT_ERRORS
from slmrec.launch import launch

# Rules that run another rule's stage with their own settings (the stage reads which from its params).
SHARED_STAGES = {"sasrec_authors": "sasrec"}
# How often the watchdog looks for Snakemake, and how long the stage's children get to exit on SIGTERM.
WATCH_INTERVAL_S = 2.0
STOP_GRACE_S = 10.0
ORPHAN_EXIT_CODE = 143  # as if killed by SIGTERM

# What a runnable copy of the workflow needs beside the installed library: tests and benchmarks run Snakemake in
# such a copy, so that they never touch the checkout's results/.
WORKFLOW_FILES = ("Snakefile", "config.yaml", "config.schema.yaml", "rules", "workflow_scripts", "envs", "profiles")

logger = logging.getLogger(__name__)


def copy_workflow(source: Path, dest: Path) -> Path:
    """Copy the workflow's files from the checkout `source` into `dest`."""
    for name in WORKFLOW_FILES:
        if (source / name).is_dir():
            shutil.copytree(source / name, dest / name)
        else:
            shutil.copy2(source / name, dest / name)
    return dest


def is_snakemake(cmdline: list[str]) -> bool:
    """`snakemake ...`, `python .../bin/snakemake ...` or `python -m snakemake ...`; not the shell or Python that
    runs a script from `.snakemake/scripts/`, whose command lines merely mention the name."""
    head = cmdline[:3]
    return any(Path(arg).name == "snakemake" for arg in head[:2]) or head[1:3] == ["-m", "snakemake"]


def snakemake_ancestor() -> psutil.Process | None:
    """The nearest Snakemake process above this one (between them, Snakemake's shell), or None."""
    for parent in psutil.Process().parents():
        with contextlib.suppress(psutil.Error):
            if is_snakemake(parent.cmdline()):
                return parent
    return None


def is_alive(process: psutil.Process) -> bool:
    """Running and not a zombie: a killed Snakemake stays a zombie until its own parent reaps it."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_process_tree(reason: str) -> None:
    """Log why, SIGTERM this process's descendants (torchrun and its workers), SIGKILL those still alive after a
    grace period, and exit at once: the main thread may be deep in a training step."""
    logger.error("%s: stopping", reason)
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=STOP_GRACE_S)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    logging.shutdown()
    os._exit(ORPHAN_EXIT_CODE)


def watch_snakemake() -> psutil.Process | None:
    """Stop this stage when the Snakemake that started it is gone, rather than train on as an orphan nobody
    waits for (its outputs would be discarded as incomplete anyway). Outside Snakemake it does nothing."""
    snakemake = snakemake_ancestor()
    if snakemake is None:
        return None

    def watch() -> None:
        while is_alive(snakemake):
            time.sleep(WATCH_INTERVAL_S)
        stop_process_tree(f"snakemake (pid {snakemake.pid}) is gone")

    threading.Thread(target=watch, name="watch-snakemake", daemon=True).start()
    logger.info("watching snakemake (pid %d): this job stops if it is killed", snakemake.pid)
    return snakemake


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


def detach_stdin() -> None:
    """Point fd 0 and `sys.stdin` at /dev/null, for this process and the workers it starts.

    A job has no one to answer a question, yet it inherits Snakemake's stdin: transformers asks there whether to run
    the code a checkpoint ships ("[y/N]"), and `yes y | snakemake ...` would answer yes. Now any read gets end-of-file.
    """
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = open(os.devnull)  # a fresh object: the old one may hold input it read ahead from the pipe


def stage_of(rule: str) -> str:
    """The stage a rule runs: the one named after it, or the stage it shares with another rule."""
    return SHARED_STAGES.get(rule, rule)


def run_stage(snakemake: Any) -> Any:
    """Every rule's whole script: call `slmrec.stages.<stage>.run` (the rule's stage, `stage_of`) with the rule's
    inputs, outputs, params and resources, logging into the rule's log; a rule with `gpu: N > 1` runs it as N
    data-parallel workers. The stage has no stdin, and stops (with its workers) if Snakemake is killed. Bad input
    exits with BAD_INPUT_EXIT_CODE and leaves a record that keeps Snakemake from retrying the job."""
    detach_stdin()
    call = StageCall.from_snakemake(snakemake, stage_of(snakemake.rule))
    try:
        with rule_logging(snakemake.log[0]):
            watch_snakemake()
            return launch(call, processes=int(call.resources.get("gpu", 1)), log_path=snakemake.log[0])
    except BAD_INPUT_ERRORS as err:
        record = record_bad_input(snakemake.rule, dict(snakemake.wildcards.items()), err, snakemake.log[0])
        print(f"{type(err).__name__}: {err}\n(bad input, not retried; recorded in {record})", file=sys.stderr)
        sys.exit(BAD_INPUT_EXIT_CODE)
