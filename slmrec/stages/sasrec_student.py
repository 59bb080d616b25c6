"""The `sasrec_student` stage: SASRec trained as the `sasrec` stage trains it, plus the score terms of an LLM
teacher read from its cached states (`slmrec.models.sasrec_student`); the LLM itself is never loaded."""

from __future__ import annotations

import logging

from transformers import set_seed

from slmrec.call import StageCall
from slmrec.data.samples import NextItemDataset, load_training_data, window_rows, window_teacher_index
from slmrec.metrics import MetricsRow
from slmrec.models.distill import DistillWeights, TeacherHead, TeacherStates
from slmrec.models.sasrec import SASRec, SASRecConfig, load_item_embeddings
from slmrec.models.sasrec_student import SASRecDistiller
from slmrec.targets import SCORE_TERM_NAMES, sasrec_student_name
from slmrec.training import fit_and_save, sasrec_fit

logger = logging.getLogger(__name__)


def run(call: StageCall) -> MetricsRow | None:
    cfg, distill, samples = call.params["sasrec"], call.params["distill"], call.params["samples"]
    data = load_training_data(call.input["splits"], call.input["negatives"], call.input["stats"])
    set_seed(cfg["seed"])  # as the sasrec stage: with every weight at 0, this is plain SASRec to the bit
    model = SASRec(SASRecConfig.from_settings(cfg, data.num_items))
    rows, dataset = window_rows(data.sequences, cfg["max_len"])
    weights = DistillWeights.from_settings(distill)
    teacher_layers, head, final = None, None, None
    if weights.needs_scores:
        cached = TeacherStates.load(call.input["teacher_states"])
        # The teacher's samples are the LLM students' (their max_len and targets_per_user), as its states were cached.
        teacher_samples = NextItemDataset(data.sequences, samples["max_len"], samples["targets_per_user"])
        cached.check_samples(call.input["teacher_states"], teacher_samples.input_ids, teacher_samples.labels)
        dataset.teacher_index = window_teacher_index(rows, teacher_samples.origins, cfg["max_len"])
        table = load_item_embeddings(call.input["item_embeddings"], data.num_items)
        head = TeacherHead.from_file(call.input["teacher_weights"], table)
        final, teacher_layers = cached.final.float(), cached.teacher_layers
        taught = int((dataset.teacher_index >= 0).sum())
        logger.info("the teacher's scores reach %d of %d training positions", taught, int((dataset.labels > 0).sum()))
    trained = SASRecDistiller(model, weights, distill, head, final)
    name = sasrec_student_name(teacher_layers, tuple(t for t in SCORE_TERM_NAMES if getattr(weights, t) > 0))
    logger.info("%s: %d training rows of %d sequences, weights %s", name, len(dataset), len(data.sequences), weights)
    fit = sasrec_fit(call, cfg, data, dataset)
    details = {"distill": distill, "teacher_layers": teacher_layers}
    return fit_and_save(model, call, fit, name=name, trained=trained, details=details)
