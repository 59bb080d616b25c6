"""The `recommend_shard` stage: one shard's part of a model's top-k for every known user (`slmrec.recommend`)."""

from __future__ import annotations

import logging

import torch

from slmrec.call import StageCall
from slmrec.evaluate import history_batches
from slmrec.io import write_parquet
from slmrec.recommend import IdMap, KnownUsers, load_model, recommendations_frame, shard_batches, top_k

logger = logging.getLogger(__name__)


def run(call: StageCall) -> None:
    settings, shard = call.params["recommend"], call.params["shard"]
    known = KnownUsers.read(call.input["splits"])
    users, items = IdMap.read(call.input["user_ids"], "user"), IdMap.read(call.input["item_ids"], "item")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = call.params["backbone"].get("precision")  # only an LLM's
    model, max_len = load_model(call.params["target"], call.input, known, len(items), precision, device)
    # Batches of the whole user list, then this shard's run of them: the same batches whatever the shard count.
    batches = shard_batches(history_batches(known.histories, max_len, call.resources["eval_batch_size"]), shard)
    top = top_k(
        model.user_vectors,
        model.item_table,
        known.histories,
        batches,
        settings["k"],
        max_len,
        exclude_history=settings["exclude_history"],
        device=device,
    )
    write_parquet(call.output["parquet"], recommendations_frame(users.raw[known.ids[top.rows]], top, items))
    call.write_manifest()
    logger.info("shard %s: %d of %d users, top %d on %s", shard, len(top.rows), len(known.ids), settings["k"], device)
