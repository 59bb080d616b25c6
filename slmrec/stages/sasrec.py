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
AUTHORS_SUFFIX = " (authors' protocol)"


def windows(sequences: list[list[int]], max_len: int) -> list[list[int]]:
    """Each sequence cut, from its newest item back, into windows of at most `max_len` targets.

    A row of `SequenceDataset` reads only the newest `max_len` inputs, so without this the older part of a
    long history (two fifths of MovieLens-100K's training targets) would never be a target. Windows
    overlap by one item, the older window's last target being the newer one's first input, so every
    target is trained on exactly once.
    """
    return [seq[max(0, end - max_len - 1) : end] for seq in sequences for end in range(len(seq), 1, -max_len)]


def run(call: StageCall) -> MetricsRow | None:
    """Every position of every window (the default), or with the `authors_protocol` param the SLMRec authors'
    SASRec: `sasrec.authors_protocol`'s settings and each user's last training item as the only target."""
    authors = call.params["authors_protocol"]
    cfg = {**call.params["sasrec"], **(call.params["sasrec"]["authors_protocol"] if authors else {})}
    data = load_training_data(call.input["splits"], call.input["negatives"], call.input["stats"])
    set_seed(cfg["seed"])
    model = SASRec(
        SASRecConfig(data.num_items, cfg["hidden"], cfg["layers"], cfg["heads"], cfg["dropout"], cfg["max_len"])
    )
    if authors:
        dataset = SequenceDataset(data.sequences, cfg["max_len"], last_only=True)
    else:
        dataset = SequenceDataset(windows(data.sequences, cfg["max_len"]), cfg["max_len"])
    logger.info(
        "SASRec%s: %d items, %d parameters, %d training rows of %d sequences",
        AUTHORS_SUFFIX if authors else "",
        data.num_items,
        model.parameter_counts()["total"],
        len(dataset),
        len(data.sequences),
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
    return fit_and_save(model, call, fit, name="SASRec" + (AUTHORS_SUFFIX if authors else ""))
