"""The `teacher` stage (and the E4SRec_l teachers of the layer sweep): fine-tune the LLM recommender."""

from __future__ import annotations

import logging

from slmrec.call import StageCall
from slmrec.data.samples import load_training_data
from slmrec.metrics import MetricsRow
from slmrec.models.llmrec import LLMRecConfig, build_llmrec
from slmrec.models.sasrec import load_item_embeddings
from slmrec.targets import teacher_name
from slmrec.training import fit_and_save, llm_fit

logger = logging.getLogger(__name__)


def run(call: StageCall) -> MetricsRow | None:
    cfg, layers = call.params["teacher"], call.params["layers"]
    data = load_training_data(call.input["splits"], call.input["negatives"], call.input["stats"])
    table = load_item_embeddings(call.input["item_embeddings"], data.num_items)
    config = LLMRecConfig.from_settings(
        call.input["backbone"], call.params["backbone"], call.params["prompt"], cfg, layers, table
    )
    model = build_llmrec(config, table, seed=cfg["seed"])
    counts = model.parameter_counts()
    logger.info(
        "teacher: %d layers, %d parameters, %d trainable (%.3f%%)",
        layers,
        counts["total"],
        counts["trainable"],
        100 * counts["trainable"] / counts["total"],
    )
    details = {"speedups": model.speedups(), "precision": model.precision}
    return fit_and_save(model, call, llm_fit(call, cfg, data), name=teacher_name(layers), details=details)
