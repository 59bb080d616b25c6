"""The `preprocess` stage: raw reviews to numbered interactions and leave-one-out splits."""

from __future__ import annotations

from slmrec.call import StageCall
from slmrec.data.preprocess import Preprocessed, preprocess, read_reviews
from slmrec.io import write_json, write_parquet


def run(call: StageCall) -> Preprocessed:
    cfg = call.params["preprocess"]
    reviews = read_reviews(call.input["raw"], call.params["source"], cfg["on_bad_line"])
    result = preprocess(reviews, cfg["min_rating"], cfg["kcore"])
    write_parquet(call.output["interactions"], result.interactions)
    write_parquet(call.output["user_ids"], result.users)
    write_parquet(call.output["item_ids"], result.items)
    write_parquet(call.output["splits"], result.splits)
    write_json(call.output["stats"], result.stats)
    call.write_manifest()
    return result
