"""The `export` stage: a trained LLM model as a self-contained directory for serving (`slmrec.export`)."""

from __future__ import annotations

import logging
from pathlib import Path

from slmrec.call import StageCall
from slmrec.export import export_llmrec
from slmrec.io import atomic_dir
from slmrec.models.llmrec import load_llmrec
from slmrec.models.sasrec import load_item_embeddings
from slmrec.recommend import IdMap

logger = logging.getLogger(__name__)


def run(call: StageCall) -> None:
    items = IdMap.read(call.input["item_ids"], "item")
    table = load_item_embeddings(call.input["item_embeddings"], len(items))
    model = load_llmrec(Path(call.input["model"]).parent, table, backbone=call.input["backbone"])
    source = {"dataset": call.wildcards.get("dataset"), "target": call.params["target"]}
    with atomic_dir(call.output["directory"]) as directory:
        export_llmrec(model, call.input["backbone"], call.input["item_ids"], directory, call.params["variant"], source)
    call.write_directory_manifest(call.output["directory"])
    size = sum(path.stat().st_size for path in Path(call.output["directory"]).iterdir())
    logger.info("exported %s as %s: %.1f MB", call.params["target"], call.params["variant"], size / 1e6)
