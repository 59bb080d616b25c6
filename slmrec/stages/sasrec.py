"""The `sasrec` stage: pretrain SASRec, keep the epoch with the best validation MRR, export its item table."""

from __future__ import annotations

import logging

from transformers import EarlyStoppingCallback, set_seed

from slmrec.call import StageCall
from slmrec.data.samples import SequenceDataset, load_training_data
from slmrec.metrics import MetricsRow
from slmrec.models.sasrec import SASRec, SASRecConfig
from slmrec.training import Fit, base_arguments, fit_and_save

logger = logging.getLogger(__name__)


def run(call: StageCall) -> MetricsRow | None:
    cfg = call.params["sasrec"]
    data = load_training_data(call.input["splits"], call.input["negatives"], call.input["stats"])
    set_seed(cfg["seed"])
    model = SASRec(
        SASRecConfig(data.num_items, cfg["hidden"], cfg["layers"], cfg["heads"], cfg["dropout"], cfg["max_len"])
    )
    dataset = SequenceDataset(data.sequences, cfg["max_len"])
    logger.info(
        "SASRec: %d items, %d parameters, %d sequences", data.num_items, model.parameter_counts()["total"], len(dataset)
    )
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
    fit = Fit(
        args,
        dataset,
        data.splits,
        cfg["max_len"],
        call.resources["eval_batch_size"],
        call.params["evaluate"]["full_ranking"],
        [EarlyStoppingCallback(early_stopping_patience=cfg["patience"])],
    )
    return fit_and_save(model, call, fit, name="SASRec")
