"""The `negatives` stage: draw the evaluation negatives once, for every model to share."""

from __future__ import annotations

import logging

import polars as pl

from slmrec.call import StageCall
from slmrec.data.negatives import draw_negatives, fewest_eligible
from slmrec.io import read_artifact, read_json, write_parquet

logger = logging.getLogger(__name__)


def run(call: StageCall) -> pl.DataFrame:
    """Draw K negatives per user and split: `num_negatives`, or fewer when the catalogue is too small.

    The catalogue's size is known only after preprocess, so a K larger than some user's count of
    never-interacted items is lowered to that count, with a warning; the manifest records the K used.
    """
    cfg = call.params["negatives"]
    splits = read_artifact(call.input["splits"], pl.read_parquet)
    num_items = read_artifact(call.input["stats"], read_json)["items"]
    users = read_artifact(call.input["user_ids"], pl.read_parquet)
    requested = cfg["num_negatives"]
    # At least 1: a user who interacted with every item is refused by draw_negatives, naming the user.
    k = max(1, min(requested, fewest_eligible(splits, num_items)))
    if k < requested:
        logger.warning(
            "negatives.num_negatives = %(asked)d, but some user has only %(k)d of the %(items)d items left to "
            "draw from: drawing %(k)d negatives per user instead (set negatives.num_negatives to at most %(k)d "
            "to silence this)",
            {"asked": requested, "k": k, "items": num_items},
        )
    negatives = draw_negatives(splits, num_items, k, cfg["seed"], users=users)
    write_parquet(call.output["negatives"], negatives)
    call.write_manifest(extra={"num_negatives": k})
    return negatives
