"""The `negatives` stage: draw the evaluation negatives once, for every model to share."""

from __future__ import annotations

import polars as pl

from slmrec.call import StageCall
from slmrec.data.negatives import draw_negatives
from slmrec.io import read_json, write_parquet


def run(call: StageCall) -> pl.DataFrame:
    cfg = call.params["negatives"]
    splits = pl.read_parquet(call.input["splits"])
    num_items = read_json(call.input["stats"])["items"]
    users = pl.read_parquet(call.input["user_ids"])
    negatives = draw_negatives(splits, num_items, cfg["num_negatives"], cfg["seed"], users=users)
    write_parquet(call.output["negatives"], negatives)
    call.write_manifest()
    return negatives
