"""The `popularity` stage: the popularity reference row, scored like every model."""

from __future__ import annotations

from slmrec.call import StageCall
from slmrec.data.samples import load_training_data
from slmrec.evaluate import score_recommender
from slmrec.metrics import MetricsRow
from slmrec.models.popularity import Popularity


def run(call: StageCall) -> MetricsRow:
    data = load_training_data(call.input["splits"], call.input["negatives"], call.input["stats"])
    model = Popularity(data.sequences, data.num_items)
    full_ranking = call.params["evaluate"]["full_ranking"]
    scores = score_recommender(model, data.splits, 1, call.resources["eval_batch_size"], full_ranking)
    row = MetricsRow.scored("Popularity", call.params["target"], model, scores.metrics())
    scores.write(call.output["ranks"])
    row.write(call.output["metrics"])
    call.write_manifest()
    return row
