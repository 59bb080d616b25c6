"""The `direct_inference` stage: score users from intermediate layers of the trained deep teacher (Figure 2).

Layer k's last-position state goes through the teacher's final norm and output projection, with no
training for that depth. Beside the E4SRec_l teachers trained at each depth, it shows how much of the
deep model's accuracy its first layers already hold: the paper's evidence that deep layers are redundant.
"""

from __future__ import annotations

import logging
from typing import Any

import polars as pl

from slmrec.call import StageCall
from slmrec.data.samples import load_training_data
from slmrec.evaluate import score_recommender
from slmrec.io import write_json, write_parquet
from slmrec.models.sasrec import load_item_embeddings
from slmrec.targets import teacher_name
from slmrec.training import load_input_teacher

logger = logging.getLogger(__name__)


def run(call: StageCall) -> dict[str, Any]:
    data = load_training_data(call.input["splits"], call.input["negatives"], call.input["stats"])
    table = load_item_embeddings(call.input["item_embeddings"], data.num_items)
    teacher = load_input_teacher(call, table).eval()
    max_len, full_ranking = teacher.config.max_len, call.params["evaluate"]["full_ranking"]
    layers: dict[str, dict[str, dict[str, float]]] = {}
    ranks = []
    for k in call.params["layers"]:
        with teacher.truncated(k):
            scores = score_recommender(teacher, data.splits, max_len, call.resources["eval_batch_size"], full_ranking)
        layers[str(k)] = scores.metrics()
        ranks.append(scores.ranks.with_columns(layer=pl.lit(k, pl.Int64)))
        logger.info("direct inference from layer %d of %d: test %s", k, teacher.num_layers, layers[str(k)]["test"])
    result = {"teacher": teacher_name(teacher.num_layers), "layers": layers}
    write_parquet(call.output["ranks"], pl.concat(ranks))  # a ranks table per layer, told apart by `layer`
    write_json(call.output["table"], result)
    call.write_manifest()
    return result
