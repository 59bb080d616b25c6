"""The `sasrec` stage: pretrain SASRec, select the best epoch by validation MRR, export its item table."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch
from safetensors.torch import load_file, save_file
from transformers import EarlyStoppingCallback, set_seed

from slmrec.data.preprocess import DataError
from slmrec.evaluate import evaluate, evaluate_splits, load_eval_splits, pad_left
from slmrec.io import atomic_path, read_json, utc_now, write_json, write_manifest
from slmrec.models.sasrec import SASRec, SASRecConfig
from slmrec.training import RankingTrainer, TrainLog, base_arguments, count_parameters, train

logger = logging.getLogger(__name__)


class SequenceDataset(torch.utils.data.Dataset):
    """One row per user: the training sequence shifted by one, so every position predicts the next item."""

    def __init__(self, sequences: list[list[int]], max_len: int) -> None:
        self.input_ids = pad_left([seq[:-1] for seq in sequences], max_len)
        self.labels = pad_left([seq[1:] for seq in sequences], max_len)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[index], "labels": self.labels[index]}


def training_sequences(splits: pl.DataFrame, num_items: int) -> list[list[int]]:
    sequences = splits["train"].to_list()
    largest = max((max(seq) for seq in sequences if seq), default=0)
    if largest > num_items:
        raise DataError(f"training item id {largest} is larger than the item table ({num_items} items)")
    return sequences


def save_model(model: SASRec, output: Any) -> None:
    # One key holding sorted JSON: safetensors does not keep metadata order, and byte-identical files
    # keep the checksums in later manifests stable across reruns.
    metadata = {"config": json.dumps(model.config.to_dict(), sort_keys=True)}
    with atomic_path(output.model) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=metadata)
    with atomic_path(output.item_embeddings) as tmp:
        save_file({"item_embeddings": model.item_table().detach().contiguous()}, str(tmp), metadata=metadata)


def load_item_embeddings(path: str | Path, num_items: int | None = None) -> torch.Tensor:
    """The frozen item table later stages reuse, checked against the dataset it should describe."""
    table = load_file(str(path))["item_embeddings"]
    if num_items is not None and table.shape[0] != num_items + 1:
        raise DataError(
            f"{path}: item table has {table.shape[0] - 1} items but the dataset has {num_items}; "
            "it was trained on another dataset or an older preprocess run"
        )
    return table


def run(
    splits_path: str,
    negatives_path: str,
    stats_path: str,
    cfg: dict[str, Any],
    max_len: int,
    eval_cfg: dict[str, Any],
    output: Any,
    checkpoint_dir: str,
    eval_batch_size: int = 512,
) -> dict[str, Any]:
    started = utc_now()
    num_items = read_json(stats_path)["items"]
    splits = pl.read_parquet(splits_path)
    eval_splits = load_eval_splits(splits_path, negatives_path, num_items)
    dataset = SequenceDataset(training_sequences(splits, num_items), max_len)

    set_seed(cfg["seed"])
    model = SASRec(SASRecConfig(num_items, cfg["hidden"], cfg["layers"], cfg["heads"], cfg["dropout"], max_len))
    params = count_parameters(model)
    logger.info("SASRec: %d items, %d parameters, %d training sequences", num_items, params["total"], len(dataset))

    def validate(m: SASRec) -> dict[str, float]:
        device = next(m.parameters()).device
        return evaluate(m.user_vectors, m.item_table(), eval_splits["valid"], max_len, eval_batch_size, device=device)

    log = TrainLog()
    args = base_arguments(
        checkpoint_dir,
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
    trainer = RankingTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_splits["valid"],
        evaluator=validate,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg["patience"]), log],
    )
    begin = time.perf_counter()
    train(trainer, checkpoint_dir)
    train_seconds = time.perf_counter() - begin

    model = trainer.model.cpu().eval()
    scores = evaluate_splits(
        model.user_vectors,
        model.item_table(),
        eval_splits,
        max_len,
        batch_size=eval_batch_size,
        full_ranking=eval_cfg["full_ranking"],
    )
    metrics = {
        "model": "SASRec",
        **scores,
        "params": {**params, "inference": params["total"]},
        "train_seconds": train_seconds,
        "inference_seconds": scores["test"]["seconds"],
        "best_checkpoint": Path(trainer.state.best_model_checkpoint or "").name,
        "best_valid_mrr": trainer.state.best_metric,
    }
    save_model(model, output)
    log.write_csv(output.train_log, trainer.state.log_history)
    write_json(output.metrics, metrics)
    write_manifest(
        output.manifest,
        stage="sasrec",
        config={"sasrec": cfg, "max_len": max_len, "evaluate": eval_cfg},
        inputs=[splits_path, negatives_path, stats_path],
        outputs=[output.model, output.item_embeddings, output.metrics, output.train_log],
        started=started,
    )
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    logger.info("SASRec test: %s", {k: round(v, 3) for k, v in scores["test"].items()})
    return metrics
