"""The `student` stage: SLMRec distillation (offline or online), and each Table 4 ablation variant."""

from __future__ import annotations

import logging
from typing import Any, cast

from safetensors.torch import load_file

from slmrec.call import StageCall
from slmrec.data.samples import NextItemDataset, load_training_data
from slmrec.io import read_artifact, read_json
from slmrec.metrics import MetricsRow
from slmrec.models.distill import Distiller, DistillWeights, TeacherHead, TeacherStates, start_from_teacher
from slmrec.models.llmrec import LLMRec, LLMRecConfig, build_llmrec
from slmrec.models.sasrec import load_item_embeddings
from slmrec.targets import needs_offline_teacher, needs_teacher_weights, student_name
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
    fit = llm_fit(call, cfg, data)
    weights = DistillWeights.from_settings(distill)
    teacher, cached, head = None, None, None
    if needs_teacher_weights(distill):
        if "teacher_weights" not in call.input:
            raise ValueError(
                "distill.student_init: teacher, or a score term's weight (distill.kd_*_weight) above 0, needs the "
                "teacher's weights: the rule's teacher_weights input"
            )
        path = call.input["teacher_weights"]
        if distill["init_from_teacher"]:
            copied = start_from_teacher(student, read_artifact(path, load_file), path)
            logger.info("started from the teacher's trained weights: %d tensors of %s", copied, path)
        head = TeacherHead.from_file(path, table) if weights.needs_scores else None
    if distill["online"]:
        teacher = build(call.params["teacher"])
        model = Distiller(
            student,
            teacher,
            distill["blocks"],
            weights,
            online=True,
            teacher_gradients=distill["online_teacher_gradients"],
            settings=distill,
        )
    elif needs_offline_teacher(distill):
        # The frozen teacher's states come from the teacher_states rule: the teacher itself is never loaded.
        if "teacher_states" not in call.input:
            raise ValueError("offline distillation from the teacher needs the teacher_states rule's artifact")
        cached = TeacherStates.load(call.input["teacher_states"])
        model = Distiller(
            student,
            None,
            distill["blocks"],
            weights,
            teacher_layers=cached.teacher_layers,
            head=head,
            settings=distill,
        )
        samples = cast(NextItemDataset, fit.dataset)  # the LLM stages train on next-item samples (llm_fit)
        cached.check(call.input["teacher_states"], samples.input_ids, samples.labels, model.boundaries)
        samples.teacher_states = cached.states
    else:
        model = Distiller(student, None, distill["blocks"], weights)
    teacher_layers = teacher.num_layers if teacher else cached.teacher_layers if cached else None
    if teacher_layers is None and "teacher_weights" in call.input:  # started from the teacher, with CE alone
        teacher_layers = int(read_artifact(call.input["teacher_config"], read_json)["layers"])
    name = student_name(call.params["target"], student.num_layers, teacher_layers)
    mode = "online" if model.online else "offline, cached teacher states" if cached else "offline"
    logger.info("%s: blocks %s, weights %s, %s", name, model.boundaries, weights, mode)
    details = {
        "distill": distill,
        "boundaries": model.boundaries,
        "teacher_params": teacher.parameter_counts() if teacher else cached.teacher_params if cached else None,
        "teacher_states": "cached" if cached else "live" if teacher else None,
        "speedups": student.speedups() + (["cached teacher states"] if cached else []),
        "init_from_teacher": distill["init_from_teacher"],
        "precision": student.precision,
    }
    return fit_and_save(student, call, fit, name=name, trained=model, details=details)
