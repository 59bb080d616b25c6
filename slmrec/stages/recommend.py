"""The `recommend` stage: gather the shards of a model's top k into one table, in user order."""

from __future__ import annotations

import logging

import polars as pl

from slmrec.call import StageCall
from slmrec.errors import ArtifactError
from slmrec.io import read_artifact, write_parquet

logger = logging.getLogger(__name__)


def run(call: StageCall) -> None:
    paths = call.input["shards"]
    parts = [read_artifact(path, pl.read_parquet) for path in paths]
    for path, part in zip(paths, parts, strict=True):
        if part.schema != parts[0].schema:
            raise ArtifactError(f"{path}: columns {dict(part.schema)}, other shards {dict(parts[0].schema)}; rerun it")
    # Raw user ids sort as the internal ids do (preprocess numbers users by sorted raw id): the users' own order.
    table = pl.concat(parts).sort("user", "rank")
    write_parquet(call.output["parquet"], table)
    call.write_manifest()
    logger.info("%d users, %d recommendations, from %d shards", table["user"].n_unique(), table.height, len(parts))
