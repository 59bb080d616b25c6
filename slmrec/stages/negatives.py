"""The `negatives` stage: draw the evaluation negatives once, for every model to share."""

from __future__ import annotations

import polars as pl

from slmrec.call import StageCall
from slmrec.data.negatives import draw_negatives
from slmrec.io import read_artifact, read_json, write_parquet


def run(call: StageCall) -> pl.DataFrame:
    cfg = call.params["negatives"]
    splits = read_artifact(call.input["splits"], pl.read_parquet)
    num_items = read_artifact(call.input["stats"], read_json)["items"]
    users = read_artifact(call.input["user_ids"], pl.read_parquet)
    negatives = draw_negatives(splits, num_items, cfg["num_negatives"], cfg["seed"], users=users)
    write_parquet(call.output["negatives"], negatives)
    call.write_manifest()
    return negatives
