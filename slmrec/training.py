"""The one training path of SASRec, the teacher and every student: fit, select, score, save.

`fit_and_save` trains any `Recommender` with a `transformers.Trainer`, resumes a killed run only
under the same run identity, selects the model by validation MRR, scores it on valid and test through
the shared protocol (`slmrec.evaluate`), and writes its artifacts, `train_log.csv`, a `MetricsRow`
and the manifest.

`RankingTrainer` swaps Trainer's loss-based evaluation for that protocol on the stored validation
negatives, so `metric_for_best_model: mrr`, early stopping and "load the best model at the end" all
work on validation MRR. It also refuses to continue past a non-finite loss.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import polars as pl
import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from slmrec import layout, trackers
from slmrec.call import RunIdentity, StageCall
from slmrec.data.samples import EvalSplit, NextItemDataset, TrainingData
from slmrec.errors import DiskFullError, NonFiniteLossError
from slmrec.evaluate import evaluate, score_recommender
from slmrec.io import atomic_path
from slmrec.metrics import MetricsRow
from slmrec.models.llmrec import LLMRec, load_llmrec
from slmrec.models.recommender import Recommender

logger = logging.getLogger(__name__)

Evaluator = Callable[[], dict[str, float]]  # scores the recommender being trained, in eval mode
IDENTITY_FILE = "identity.json"  # the run identity the checkpoints beside it were made under
FINISHED_FILE = "FINISHED"  # training ended: these checkpoints are never resumed
DISK_FULL_FREE_BYTES = 1 << 20  # below this, a write that failed without saying why failed for want of space


def free_bytes(directory: Path) -> int:
    """Free space on the filesystem that holds `directory` (or its nearest existing parent)."""
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    return shutil.disk_usage(existing).free


def is_disk_full(error: BaseException, directory: Path) -> bool:
    """Whether a failed write failed for want of space (or of quota), whatever the writer calls it."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    if "No space left on device" in text:  # safetensors: "I/O error: No space left on device (os error 28)"
        return True
    # torch.save names no cause: ask the filesystem whether a full disk is why its writer stopped.
    return "inline_container" in text and free_bytes(directory) < DISK_FULL_FREE_BYTES


@contextlib.contextmanager
def disk_full_named(what: str, directory: Path) -> Iterator[None]:
    """Turn a write that ran out of space inside the block into a `DiskFullError` naming `what` and where."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as error:
        if not is_disk_full(error, directory):
            raise
        raise DiskFullError(
            errno.ENOSPC,
            f"no space left on device while writing {what} in {directory} ({free_bytes(directory)} bytes free "
            "there); free some space and run again: training resumes from the newest complete checkpoint",
        ) from error


def metric_key(name: str) -> str:
    """Metric names as Trainer keys: `HR@10` -> `hr@10`, so `metric_for_best_model: mrr` reads naturally."""
    return name.lower()


class RankingTrainer(Trainer):
    """A Trainer whose evaluation is the shared ranking protocol instead of an eval loss.

    Pass the validation `EvalSplit` as `eval_dataset` (Trainer checks one is there) and an
    `evaluator` that scores the model being trained on it.
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
            state_dict = cast(Any, self.model).trainable_state_dict()
        super()._save(output_dir, state_dict=state_dict)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        # Frozen weights are absent from checkpoints on purpose; only unexpected keys are worth a warning.
        if load_result.unexpected_keys:
            logger.warning("checkpoint holds unexpected weights: %s", load_result.unexpected_keys[:5])

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        model = cast(nn.Module, self.model)
        was_training = model.training
        model.eval()
        try:
            scores = self.evaluator()
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
    so a job killed and rerun still writes the whole curve; the seconds, and the total training time,
    travel in a small file beside each checkpoint.
    """

    CLOCK = "slmrec_clock.json"

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self.earlier = 0.0  # training seconds of the runs before a resume, up to the checkpoint resumed
        self._begin = self._last = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Training seconds of the whole run, summed over resumes."""
        return self.earlier + time.perf_counter() - self._begin

    def restore(self, checkpoint: str | Path) -> None:
        clock = Path(checkpoint) / self.CLOCK
        if clock.is_file():
            saved = json.loads(clock.read_text())
            self.earlier = saved["elapsed"]
            self.seconds = {int(step): value for step, value in saved["seconds"].items()}

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: D102
        self._begin = self._last = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):  # noqa: D102
        # Beside each checkpoint, so a resumed run knows how long the run took up to it.
        if state.is_world_process_zero:
            clock = {"elapsed": self.elapsed, "seconds": self.seconds}
            with atomic_path(Path(args.output_dir) / f"checkpoint-{state.global_step}" / self.CLOCK) as tmp:
                tmp.write_text(json.dumps(clock))

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
        rows: list[dict[str, float]] = []
        pending: dict[str, list[float]] = {}
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


def base_arguments(output_dir: str | Path, seed: int, **overrides: Any) -> TrainingArguments:
    """TrainingArguments with the project's fixed choices; stage settings come in as overrides."""
    options: dict[str, Any] = {
        "output_dir": str(output_dir),
        "seed": seed,
        "data_seed": seed,
        "report_to": [],  # none of Trainer's own: `training.report_to` adds its tracker (slmrec.trackers)
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


def batch_plan(batch_size: int, per_device_batch_size: int, world: int) -> tuple[int, int]:
    """(micro-batch per device, gradient accumulation steps) that make up the effective `batch_size`.

    The micro-batch is a runtime choice (a rule resource; 0 = as large as possible), so changing it
    does not change the science: accumulation makes up the rest.
    """
    micro = per_device_batch_size or math.ceil(batch_size / world)
    accumulation = max(1, batch_size // (micro * world))
    if micro * world * accumulation != batch_size:
        raise ValueError(f"batch_size {batch_size} is not a multiple of per-device batch {micro} x {world} processes")
    return micro, accumulation


def step_arguments(
    cfg: dict[str, Any], checkpoint_dir: str | Path, dtype: str, per_device_batch_size: int
) -> TrainingArguments:
    """Trainer settings of the LLM stages from their config section; `batch_size` is the effective batch."""
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    micro, accumulation = batch_plan(cfg["batch_size"], per_device_batch_size, world)
    cuda = torch.cuda.is_available()
    return base_arguments(
        checkpoint_dir,
        cfg["seed"],
        learning_rate=cfg["learning_rate"],
        lr_scheduler_type=cfg["lr_scheduler_type"],
        warmup_steps=cfg["warmup_steps"],
        max_steps=cfg["max_steps"],
        num_train_epochs=cfg["epochs"],
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        weight_decay=cfg["weight_decay"],
        max_grad_norm=cfg["max_grad_norm"],
        adam_beta1=cfg["adam_beta1"],
        adam_beta2=cfg["adam_beta2"],
        adam_epsilon=cfg["adam_epsilon"],
        optim="adamw_torch",
        eval_strategy="steps",
        eval_steps=cfg["eval_steps"],
        save_strategy="steps",
        save_steps=cfg["eval_steps"],
        logging_steps=cfg["logging_steps"],
        bf16=cuda and dtype == "bfloat16",
        fp16=cuda and dtype == "float16",
        ddp_find_unused_parameters=False,
    )


@dataclass
class Fit:
    """What a stage chooses about training and scoring; everything else is the same for every model."""

    args: TrainingArguments
    dataset: torch.utils.data.Dataset
    splits: dict[str, EvalSplit]
    max_len: int
    eval_batch_size: int
    full_ranking: bool
    callbacks: list[TrainerCallback] = field(default_factory=list)


def validate(recommender: Recommender, fit: Fit) -> dict[str, float]:
    """The validation metrics that select the model (sampled candidates only: full ranking is for reports)."""
    table = recommender.item_table
    split = fit.splits["valid"]
    return evaluate(
        recommender.user_vectors,
        table,
        split,
        fit.max_len,
        fit.eval_batch_size,
        full_ranking=False,
        device=table.device,
    )


def incomplete(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from (a save cut short by a kill or a full disk), or None if complete.

    Trainer writes the weights, then the optimizer, scheduler and RNG state, then `trainer_state.json`; the
    run's clock comes last (`TrainLog.on_save`). Each file must be there and readable to its end: a safetensors
    header that fits the file, a torch archive whose directory (at its end) is intact, JSON that parses.
    """
    if not any(checkpoint.glob("*.safetensors")):
        return "it holds no weights"
    for required in ("trainer_state.json", TrainLog.CLOCK):
        if not (checkpoint / required).is_file():
            return f"{required} is missing"
    for file in sorted(checkpoint.iterdir()):
        try:
            if file.suffix == ".json":
                json.loads(file.read_text())
            elif file.suffix == ".safetensors":
                with safe_open(file, "pt"):
                    pass
            elif file.suffix in (".pt", ".pth", ".bin"):
                zipfile.ZipFile(file).close()
        except (OSError, ValueError, SafetensorError, zipfile.BadZipFile) as error:
            return f"{file.name} is cut short or corrupt ({type(error).__name__}: {error})"
    return None


def discard_incomplete(checkpoint_dir: Path) -> None:
    """Remove the checkpoints a kill or a full disk left half-written, saying which and why, so that the run
    resumes from the newest complete one (Trainer would pick the newest by name and fail on it)."""
    for checkpoint in sorted(p for p in checkpoint_dir.glob("checkpoint-*") if p.is_dir()):
        reason = incomplete(checkpoint)
        if reason:
            logger.warning("skipping %s: %s (a save cut short); removing it", checkpoint, reason)
            shutil.rmtree(checkpoint)


def resume_point(checkpoint_dir: Path, identity: RunIdentity, is_main: bool, distributed: bool) -> str | None:
    """The checkpoint to resume from: the newest complete one a killed run of this very identity left, never
    one of a finished run.

    Anything else in `checkpoint_dir` is discarded, and the log says why.
    """
    stamp, finished = checkpoint_dir / IDENTITY_FILE, checkpoint_dir / FINISHED_FILE
    if is_main and any(checkpoint_dir.glob("checkpoint-*")):
        reason: str | None
        if finished.exists():
            reason = "they belong to a run that finished"
        elif not stamp.is_file():
            reason = "they carry no record of the settings they were made with"
        else:
            changed = identity.changes(RunIdentity.read(stamp))
            reason = f"changed since they were made: {', '.join(changed)}" if changed else None
        if reason:
            logger.info("starting afresh: discarding the checkpoints in %s, %s", checkpoint_dir, reason)
            shutil.rmtree(checkpoint_dir)
        else:
            discard_incomplete(checkpoint_dir)
    if distributed:
        torch.distributed.barrier()
    last = get_last_checkpoint(str(checkpoint_dir)) if checkpoint_dir.is_dir() else None
    if is_main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        identity.write(stamp)
    return last


def fit_and_save(
    recommender: Recommender,
    call: StageCall,
    fit: Fit,
    *,
    name: str,
    trained: nn.Module | None = None,
    details: dict[str, Any] | None = None,
) -> MetricsRow | None:
    """Train (`trained`, or the recommender itself), keep the best validation MRR, score, write everything.

    `trained` is the module whose loss trains the recommender when they differ (the distiller around a
    student). Only the main process writes; the others return None. The experiment tracker of the rule's `report_to`
    logs to `runs/` beside the model; a fresh run removes what an earlier one left there, a resumed one adds to it.
    """
    checkpoint_dir = Path(cast(str, fit.args.output_dir))
    runs = layout.runs(Path(call.output["metrics"]).parent)
    log = TrainLog()
    trainer = RankingTrainer(
        model=trained if trained is not None else recommender,
        args=fit.args,
        train_dataset=fit.dataset,
        eval_dataset=fit.splits["valid"],
        evaluator=lambda: validate(recommender, fit),
        callbacks=[log, *fit.callbacks, *trackers.callbacks(call.resources["report_to"], runs)],
    )
    main = trainer.is_world_process_zero()
    last = resume_point(checkpoint_dir, call.identity(), main, trainer.args.world_size > 1)
    if main and not last:
        shutil.rmtree(runs, ignore_errors=True)  # the curves of another run (another model)
    if last:
        logger.info("resuming from %s", last)
        log.restore(last)
    with disk_full_named("a checkpoint", checkpoint_dir):
        trainer.train(resume_from_checkpoint=last)
    train_seconds = log.elapsed
    if not main:
        return None
    recommender.eval()
    scores = score_recommender(recommender, fit.splits, fit.max_len, fit.eval_batch_size, fit.full_ranking)
    best = trainer.state.best_model_checkpoint
    row = MetricsRow.scored(
        name,
        call.params["target"],
        recommender,
        scores.metrics(),
        train_seconds=train_seconds,
        best_step=int(Path(best).name.split("-")[-1]) if best else None,
        best_valid_mrr=trainer.state.best_metric,
        details=details,
    )
    with disk_full_named(f"the {name} artifacts", Path(call.output["metrics"]).parent):
        recommender.save_artifacts(call.output)
        scores.write(call.output["ranks"])
        log.write_csv(call.output["train_log"], trainer.state.log_history)
        row.write(call.output["metrics"])
        call.write_manifest()
    (checkpoint_dir / FINISHED_FILE).touch()  # only now: a run killed before this resumes at its last checkpoint
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    logger.info("%s test: %s", name, {k: round(v, 3) for k, v in row.test.items()})
    return row


def load_input_teacher(call: StageCall, item_table: Tensor, **overrides: Any) -> LLMRec:
    """The trained teacher a stage reads: its rule's `teacher` weights on its `backbone` input (never the path
    recorded at training), computing in the precision of the stage's `backbone` params."""
    teacher_dir = Path(call.input["teacher"]).parent
    precision = call.params["backbone"]["precision"]
    return load_llmrec(teacher_dir, item_table, backbone=call.input["backbone"], precision=precision, **overrides)


def llm_fit(call: StageCall, cfg: dict[str, Any], data: TrainingData) -> Fit:
    """How the teacher and every student train: steps of Trainer over next-item samples."""
    dtype = call.params["backbone"]["dtype"]
    return Fit(
        step_arguments(cfg, call.params["checkpoints"], dtype, call.resources["per_device_batch_size"]),
        NextItemDataset(data.sequences, cfg["max_len"], cfg["targets_per_user"]),
        data.splits,
        cfg["max_len"],
        call.resources["eval_batch_size"],
        call.params["evaluate"]["full_ranking"],
    )


def sasrec_fit(call: StageCall, cfg: dict[str, Any], data: TrainingData, dataset: torch.utils.data.Dataset) -> Fit:
    """How every SASRec trains: epochs of Adam at a constant rate, early-stopped on validation MRR."""
    args = base_arguments(
        call.params["checkpoints"],
        cfg["seed"],
        learning_rate=cfg["lr"],
        weight_decay=cfg["weight_decay"],
        adam_beta2=0.98,
        lr_scheduler_type="constant",
        per_device_train_batch_size=cfg["batch_size"],
        num_train_epochs=cfg["epochs"],
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
    )
    return Fit(
        args,
        dataset,
        data.splits,
        cfg["max_len"],
        call.resources["eval_batch_size"],
        call.params["evaluate"]["full_ranking"],
        [EarlyStoppingCallback(early_stopping_patience=cfg["patience"])],
    )
