"""Experiment trackers for the training stages (`training.report_to`).

A tracker is Trainer's own callback for it, so it is given the log entries that also become `train_log.csv`: each
loss term and the validation metrics, at their optimizer steps. It writes to the `runs/` directory beside the model it
follows (`slmrec.layout.runs`), not to a dated folder under the checkpoints, which a finished run deletes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback

from slmrec.errors import ConfigError


class TensorBoard(TensorBoardCallback):
    """Trainer's TensorBoard callback, writing its event files to `runs`."""

    def __init__(self, runs: str | Path) -> None:
        super().__init__()
        self.logging_dir = str(runs)

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: D102
        # Without the model: the callback would log its config as a transformers config, which SASRec's and
        # LLMRec's are not.
        super().on_train_begin(args, state, control)


TRACKERS = {"tensorboard": TensorBoard}  # by their name in `training.report_to`, which is also their package's


def callbacks(report_to: str, runs: str | Path) -> list[TrainerCallback]:
    """The Trainer callbacks of the setting `training.report_to`: none, or its tracker writing to `runs`."""
    if report_to == "none":
        return []
    if importlib.util.find_spec(report_to) is None:
        raise ConfigError(
            f"training.report_to: {report_to} needs the {report_to} package, which is not installed; install it "
            f"with: pip install 'slmrec[{report_to}]' (or set training.report_to: none)"
        )
    return [TRACKERS[report_to](runs)]
