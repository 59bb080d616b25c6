"""The `teacher` stage (and its E4SRec_l layer-count variants): fine-tune the LLM recommender.

Training runs in `transformers.Trainer` with settings from config, validation MRR on the stored
negatives selects the model, and a killed job resumes from its last checkpoint. The distillation
stage reuses the dataset, the arguments and the artifact writing defined here.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
from torch import nn
from transformers import TrainingArguments

from slmrec.evaluate import EvalSplit, evaluate, evaluate_splits, load_eval_splits, pad_left
from slmrec.io import read_json, utc_now, write_json, write_manifest
from slmrec.models.llmrec import LLMRec, LLMRecConfig, LoraSettings, build_llmrec
from slmrec.stages.sasrec import load_item_embeddings
from slmrec.training import RankingTrainer, TrainLog, base_arguments, count_parameters, train

logger = logging.getLogger(__name__)


class NextItemDataset(torch.utils.data.Dataset):
    """Prefixes of each user's training sequence with the item that follows, at most `targets_per_user`.

    The paper trains on one target per user (the last training item); E4SRec uses up to 50.
    """

    def __init__(self, sequences: list[list[int]], max_len: int, targets_per_user: int) -> None:
        histories, labels = [], []
        for seq in sequences:
            for end in range(max(1, len(seq) - targets_per_user), len(seq)):
                histories.append(seq[:end])
                labels.append(seq[end])
        if not labels:
            raise ValueError("no training samples: every user has fewer than two training items")
        self.input_ids = pad_left(histories, max_len)
        self.labels = torch.tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[index], "labels": self.labels[index]}


def model_config(
    backbone_dir: str, backbone: dict[str, Any], prompt: dict[str, str], layers: int, table: torch.Tensor, cfg: dict
) -> LLMRecConfig:
    return LLMRecConfig(
        backbone=str(backbone_dir),
        layers=layers,
        item_dim=table.shape[1],
        num_items=table.shape[0] - 1,
        dtype=backbone["dtype"],
        quantization=backbone["quantization"],
        lora=LoraSettings(**cfg["lora"]),
        prompt_prefix=prompt["prefix"],
        prompt_suffix=prompt["suffix"],
        gradient_checkpointing=cfg["gradient_checkpointing"],
    )


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


def training_arguments(
    cfg: dict[str, Any], checkpoint_dir: str, dtype: str, per_device_batch_size: int = 0
) -> TrainingArguments:
    """Trainer settings from a config section; `batch_size` is the effective batch over all devices."""
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


def validator(split: EvalSplit, max_len: int, batch_size: int) -> Callable[[nn.Module], dict[str, float]]:
    def validate(model: nn.Module) -> dict[str, float]:
        device = model.item_table.device
        return evaluate(model.user_vectors, model.item_table, split, max_len, batch_size, device=device)

    return validate


def llm_parameters(model: LLMRec) -> dict[str, int]:
    """Total, trainable and at-inference counts (LoRA merges into the base weights, so it adds nothing)."""
    counts = count_parameters(model)
    lora = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    return {**counts, "inference": counts["total"] - lora}


@dataclass
class Job:
    """How one training job runs and where it writes: the same for the teacher and every student."""

    max_len: int
    eval_cfg: dict[str, Any]
    output: Any
    checkpoint_dir: str
    dtype: str
    eval_batch_size: int = 512
    per_device_batch_size: int = 0


def prepare(
    splits_path: str, negatives_path: str, stats_path: str, item_embeddings_path: str, max_len: int, targets: int
) -> tuple[torch.Tensor, dict[str, EvalSplit], NextItemDataset]:
    """The frozen item table, the validation/test splits and the training samples, cross-checked."""
    num_items = read_json(stats_path)["items"]
    table = load_item_embeddings(item_embeddings_path, num_items)
    eval_splits = load_eval_splits(splits_path, negatives_path, num_items)
    dataset = NextItemDataset(pl.read_parquet(splits_path)["train"].to_list(), max_len, targets)
    return table, eval_splits, dataset


def train_and_save(
    trained: nn.Module,
    saved: LLMRec,
    dataset: NextItemDataset,
    eval_splits: dict[str, EvalSplit],
    cfg: dict[str, Any],
    job: Job,
    *,
    stage: str,
    name: str,
    fingerprint: dict[str, Any],
    manifest: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Train `trained` with Trainer (resuming a killed run, selecting by validation MRR), then score the
    selected `saved` model on valid and test and write its weights, metrics, log and manifest.

    `saved` is the model itself for the teacher, the student inside the distiller for a student. Only
    the main process writes; the others return None.
    """
    log = TrainLog()
    trainer = RankingTrainer(
        model=trained,
        args=training_arguments(cfg, job.checkpoint_dir, job.dtype, job.per_device_batch_size),
        train_dataset=dataset,
        eval_dataset=eval_splits["valid"],
        evaluator=validator(eval_splits["valid"], job.max_len, job.eval_batch_size),
        callbacks=[log],
    )
    begin = time.perf_counter()
    train(trainer, job.checkpoint_dir, fingerprint=fingerprint)
    train_seconds = time.perf_counter() - begin
    if not trainer.is_world_process_zero():
        return None
    saved.eval()
    scores = evaluate_splits(
        saved.user_vectors,
        saved.item_table,
        eval_splits,
        job.max_len,
        batch_size=job.eval_batch_size,
        full_ranking=job.eval_cfg["full_ranking"],
        device=saved.item_table.device,
    )
    metrics = {
        "model": name,
        "layers": saved.num_layers,
        **scores,
        "params": llm_parameters(saved),
        "train_seconds": train_seconds,
        "inference_seconds": scores["test"]["seconds"],
        "best_step": int(Path(trainer.state.best_model_checkpoint or "checkpoint-0").name.split("-")[-1]),
        "best_valid_mrr": trainer.state.best_metric,
        **(extra or {}),
    }
    out_dir = Path(job.output.model).parent
    saved.save(out_dir)
    log.write_csv(job.output.train_log, trainer.state.log_history)
    write_json(job.output.metrics, metrics)
    write_manifest(
        job.output.manifest,
        stage=stage,
        outputs=[job.output.model, job.output.metrics, job.output.train_log],
        **manifest,
    )
    logger.info("%s test: %s", name, {k: round(v, 3) for k, v in scores["test"].items()})
    return metrics


def run(
    splits_path: str,
    negatives_path: str,
    stats_path: str,
    item_embeddings_path: str,
    backbone_dir: str,
    cfg: dict[str, Any],
    backbone: dict[str, Any],
    prompt: dict[str, str],
    max_len: int,
    eval_cfg: dict[str, Any],
    output: Any,
    checkpoint_dir: str,
    layers: int | None = None,
    eval_batch_size: int = 512,
    per_device_batch_size: int = 0,
) -> dict[str, Any] | None:
    """Train the E4SRec-style teacher with `layers` (default `cfg['layers']`) decoder layers."""
    started = utc_now()
    layers = layers or cfg["layers"]
    inputs = [splits_path, negatives_path, stats_path, item_embeddings_path]
    table, eval_splits, dataset = prepare(*inputs, max_len, cfg["targets_per_user"])

    model = build_llmrec(model_config(backbone_dir, backbone, prompt, layers, table, cfg), table, seed=cfg["seed"])
    params = llm_parameters(model)
    logger.info(
        "teacher: %d layers, %d parameters, %d trainable (%.3f%%), %d training samples",
        layers,
        params["total"],
        params["trainable"],
        100 * params["trainable"] / params["total"],
        len(dataset),
    )
    job = Job(max_len, eval_cfg, output, checkpoint_dir, backbone["dtype"], eval_batch_size, per_device_batch_size)
    return train_and_save(
        model,
        model,
        dataset,
        eval_splits,
        cfg,
        job,
        stage="teacher",
        name=f"E4SRec_{layers}",
        fingerprint={"cfg": cfg, "backbone": backbone, "layers": layers},
        manifest={
            "config": {"teacher": cfg, "backbone": backbone, "prompt": prompt, "layers": layers, "max_len": max_len},
            "inputs": inputs,
            "started": started,
        },
    )
