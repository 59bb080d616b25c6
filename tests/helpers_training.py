"""Killed and running jobs, for the resume and interruption tests: a training run killed after a chosen optimizer
step, as a killed job would be, and the process of a running job."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil
import pytest

from slmrec import training


class Killed(Exception):
    """What the run raises where a real job would have been killed."""


def recording_log(steps: list[int], stop_after: int | None = None) -> type:
    """A TrainLog that records every optimizer step in `steps`, and dies after step `stop_after` if given."""

    class Recording(training.TrainLog):
        def on_step_end(self, args, state, control, **kwargs):
            steps.append(state.global_step)
            if state.global_step == stop_after:
                raise Killed(f"killed after step {stop_after}")

    return Recording


def kill_at(monkeypatch: pytest.MonkeyPatch, step: int, steps: list[int] | None = None) -> None:
    """Make the next training run die after optimizer step `step` (recording the steps it ran in `steps`)."""
    monkeypatch.setattr(training, "TrainLog", recording_log([] if steps is None else steps, stop_after=step))


def job_writing(parent: psutil.Process, log: Path) -> psutil.Process | None:
    """The process among `parent`'s descendants that holds the rule log `log` open: the job of that rule (every
    rule runs the same script, so its command line does not tell them apart)."""
    for child in parent.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any(Path(f.path) == log.resolve() for f in child.open_files()):
                return child
    return None
