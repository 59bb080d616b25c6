"""The `student` stage: SLMRec distillation (offline or online), and each Table 4 ablation variant."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from slmrec.call import StageCall
from slmrec.data.samples import load_training_data
from slmrec.metrics import MetricsRow
from slmrec.models.distill import Distiller, DistillWeights
from slmrec.models.llmrec import LLMRec, LLMRecConfig, build_llmrec, load_llmrec
from slmrec.models.sasrec import load_item_embeddings
from slmrec.targets import needs_offline_teacher, student_name
from slmrec.training import fit_and_save, llm_fit

logger = logging.getLogger(__name__)


def run(call: StageCall) -> MetricsRow | None:
    cfg, distill = call.params["student"], call.params["distill"]
    data = load_training_data(call.input["splits"], call.input["negatives"], call.input["stats"])
    table = load_item_embeddings(call.input["item_embeddings"], data.num_items)

    def build(section: dict[str, Any]) -> LLMRec:
        config = LLMRecConfig.from_settings(
            call.input["backbone"], call.params["backbone"], call.params["prompt"], section, section["layers"], table
        )
        return build_llmrec(config, table, section["seed"])

    student = build(cfg)
    teacher = None
    if distill["online"]:
        teacher = build(call.params["teacher"])
    elif needs_offline_teacher(distill):
        if "teacher" not in call.input:
            raise ValueError("offline distillation with cosine or L2 terms needs the teacher stage's artifact")
        teacher_dir = Path(call.input["teacher"]).parent
        teacher = load_llmrec(teacher_dir, table, quantization=distill["teacher_quantization"])
    weights = DistillWeights.from_settings(distill)
    model = Distiller(student, teacher, distill["blocks"], weights, online=distill["online"])
    name = student_name(call.params["target"], student.num_layers, teacher.num_layers if teacher else None)
    logger.info(
        "%s: blocks %s, weights %s, %s", name, model.boundaries, weights, "online" if model.online else "offline"
    )
    details = {
        "distill": distill,
        "boundaries": model.boundaries,
        "teacher_params": teacher.parameter_counts() if teacher is not None else None,
    }
    return fit_and_save(student, call, llm_fit(call, cfg, data), name=name, trained=model, details=details)
