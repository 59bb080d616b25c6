"""The `sasrec` stage: pretrain SASRec, keep the epoch with the best validation MRR, export its item table."""

from __future__ import annotations

import logging

from transformers import set_seed

from slmrec.call import StageCall
from slmrec.data.samples import SequenceDataset, load_training_data, window_rows
from slmrec.metrics import MetricsRow
from slmrec.models.sasrec import SASRec, SASRecConfig
from slmrec.training import fit_and_save, sasrec_fit

logger = logging.getLogger(__name__)
AUTHORS_SUFFIX = " (authors' protocol)"


def run(call: StageCall) -> MetricsRow | None:
    """Every position of every window (the default), or with the `authors_protocol` param the SLMRec authors'
    SASRec: `sasrec.authors_protocol`'s settings and each user's last training item as the only target."""
    authors = call.params["authors_protocol"]
    cfg = {**call.params["sasrec"], **(call.params["sasrec"]["authors_protocol"] if authors else {})}
    data = load_training_data(call.input["splits"], call.input["negatives"], call.input["stats"])
    set_seed(cfg["seed"])
    model = SASRec(SASRecConfig.from_settings(cfg, data.num_items))
    if authors:
        dataset = SequenceDataset(data.sequences, cfg["max_len"], last_only=True)
    else:
        dataset = window_rows(data.sequences, cfg["max_len"])[1]
    logger.info(
        "SASRec%s: %d items, %d parameters, %d training rows of %d sequences",
        AUTHORS_SUFFIX if authors else "",
        data.num_items,
        model.parameter_counts()["total"],
        len(dataset),
        len(data.sequences),
    )
    fit = sasrec_fit(call, cfg, data, dataset)
    return fit_and_save(model, call, fit, name="SASRec" + (AUTHORS_SUFFIX if authors else ""))
