"""What every trained model shares: a `transformers.Trainer` that selects by ranking metrics.

`RankingTrainer` swaps Trainer's loss-based evaluation for the shared ranking protocol
(`slmrec.evaluate`) on the stored validation negatives, so `metric_for_best_model: mrr`, early
stopping and "load the best model at the end" all work on validation MRR. It also refuses to
continue past a non-finite loss, and keeps a per-evaluation log for `train_log.csv`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from slmrec.io import atomic_path

logger = logging.getLogger(__name__)

Evaluator = Callable[[nn.Module], dict[str, float]]


class NonFiniteLossError(FloatingPointError):
    pass


def metric_key(name: str) -> str:
    """Metric names as Trainer keys: `HR@10` -> `hr@10`, so `metric_for_best_model: mrr` reads naturally."""
    return name.lower()


class RankingTrainer(Trainer):
    """A Trainer whose evaluation is the shared ranking protocol instead of an eval loss.

    Pass the validation `EvalSplit` as `eval_dataset` (Trainer checks one is there) and an
    `evaluator` that scores a model on it.
    """

    def __init__(self, *args: Any, evaluator: Evaluator, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.evaluator = evaluator
        self._terms: dict[str, list[float]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        outputs = model(**inputs)
        loss = outputs["loss"]
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at epoch {self.state.epoch or 0:.2f}, step "
                f"{self.state.global_step + 1}; lower the learning rate or check the inputs. No model was written."
            )
        for name, value in outputs.get("terms", {}).items():
            self._terms.setdefault(name, []).append(float(value))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        # Each term of a composite loss (e.g. distillation) is logged beside the total.
        if "loss" in logs and self._terms:
            logs = {**logs, **{name: sum(v) / len(v) for name, v in self._terms.items()}}
            self._terms = {}
        super().log(logs, *args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # Checkpoint only what trains (LoRA, projections): a 7B backbone is never rewritten.
        if state_dict is None and hasattr(self.model, "trainable_state_dict"):
            state_dict = self.model.trainable_state_dict()
        super()._save(output_dir, state_dict=state_dict)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        # Frozen weights are absent from checkpoints on purpose; only unexpected keys are worth a warning.
        if load_result.unexpected_keys:
            logger.warning("checkpoint holds unexpected weights: %s", load_result.unexpected_keys[:5])

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        model = self.model
        was_training = model.training
        model.eval()
        try:
            scores = self.evaluator(model)
        finally:
            model.train(was_training)
        metrics = {f"{metric_key_prefix}_{metric_key(k)}": v for k, v in scores.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class TrainLog(TrainerCallback):
    """A log line per evaluation, and `train_log.csv`: one row per evaluation with the mean of each
    training loss term since the previous one, the validation metrics and the seconds in between.

    The rows come from Trainer's own `log_history`, which a resumed run restores from its checkpoint,
    so a job killed and rerun still writes the whole curve (seconds are known for this run's rows).
    """

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self._last = time.perf_counter()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: D102
        now = time.perf_counter()
        self.seconds[state.global_step] = now - self._last
        self._last = now
        losses = [e["loss"] for e in reversed(state.log_history) if "loss" in e][:1]
        logger.info(
            "epoch %.2f step %d: loss %s, valid MRR %.3f, %.1f s",
            state.epoch or 0.0,
            state.global_step,
            f"{losses[0]:.4f}" if losses else "n/a",
            (metrics or {}).get("eval_mrr", math.nan),
            self.seconds[state.global_step],
        )

    def rows(self, log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
        rows, pending = [], {}
        for entry in log_history:
            for key, value in entry.items():
                if key.startswith("loss"):
                    pending.setdefault(key, []).append(float(value))
            metrics = {k.removeprefix("eval_"): v for k, v in entry.items() if k.startswith("eval_")}
            if not metrics:
                continue
            row = {"step": entry["step"], "epoch": round(entry.get("epoch", 0.0), 4)}
            row.update({key: sum(values) / len(values) for key, values in pending.items()})
            row.update({k: v for k, v in metrics.items() if k != "seconds"})
            row["seconds"] = self.seconds.get(entry["step"], math.nan)
            rows.append(row)
            pending = {}
        return rows

    def write_csv(self, path: str | Path, log_history: list[dict[str, Any]]) -> None:
        rows = self.rows(log_history)
        frame = pl.DataFrame(rows) if rows else pl.DataFrame({"step": [], "epoch": []})
        first = ("step", "epoch")
        frame = frame.select(*first, *sorted(c for c in frame.columns if c not in first))
        with atomic_path(path) as tmp:
            frame.write_csv(tmp)


def train(trainer: Trainer, checkpoint_dir: str | Path, fingerprint: dict[str, Any] | None = None) -> None:
    """Train, resuming from the newest checkpoint a killed run left in `checkpoint_dir`.

    Checkpoints made under other settings (the `fingerprint`) are discarded rather than resumed.
    """
    checkpoint_dir = Path(checkpoint_dir)
    stamp = checkpoint_dir / "fingerprint.json"
    wanted = json.dumps(fingerprint or {}, sort_keys=True, default=str)
    made_elsewise = not stamp.is_file() or stamp.read_text() != wanted
    if any(checkpoint_dir.glob("checkpoint-*")) and made_elsewise:
        if trainer.is_world_process_zero():
            logger.info("discarding checkpoints in %s: made with other settings", checkpoint_dir)
            shutil.rmtree(checkpoint_dir)
    if trainer.args.world_size > 1:
        torch.distributed.barrier()
    last = get_last_checkpoint(str(checkpoint_dir)) if checkpoint_dir.is_dir() else None
    if trainer.is_world_process_zero():
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(wanted)
    if last:
        logger.info("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)


def _numel(parameter: torch.Tensor) -> int:
    """Logical size: a 4-bit weight is stored packed (two values a byte) with its real shape on the side."""
    quant_state = getattr(parameter, "quant_state", None)
    return math.prod(quant_state.shape) if quant_state is not None else parameter.numel()


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(_numel(p) for p in model.parameters())
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def base_arguments(output_dir: str | Path, seed: int, **overrides: Any) -> TrainingArguments:
    """TrainingArguments with the project's fixed choices; stage settings come in as overrides."""
    options: dict[str, Any] = {
        "output_dir": str(output_dir),
        "seed": seed,
        "data_seed": seed,
        "report_to": [],
        "metric_for_best_model": "mrr",
        "greater_is_better": True,
        "load_best_model_at_end": True,
        "save_total_limit": 2,
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "disable_tqdm": False,
        "save_only_model": False,
        # Without CUDA, say so: under torchrun, Trainer then trains data-parallel over gloo on CPUs.
        "use_cpu": not torch.cuda.is_available(),
    }
    options.update(overrides)
    return TrainingArguments(**options)
