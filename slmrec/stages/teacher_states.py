"""The `teacher_states` stage: the frozen teacher's states at the block boundaries, once for all its students."""

from __future__ import annotations

import logging

from slmrec.call import StageCall
from slmrec.data.samples import NextItemDataset, load_training_data
from slmrec.models.distill import TeacherStates
from slmrec.models.sasrec import load_item_embeddings
from slmrec.training import load_input_teacher

logger = logging.getLogger(__name__)


def run(call: StageCall) -> TeacherStates:
    samples, distill = call.params["samples"], call.params["distill"]
    data = load_training_data(call.input["splits"], call.input["negatives"], call.input["stats"])
    table = load_item_embeddings(call.input["item_embeddings"], data.num_items)
    teacher = load_input_teacher(call, table, quantization=distill["teacher_quantization"])
    # The very samples every student trains on (the student's max_len and targets_per_user).
    dataset = NextItemDataset(data.sequences, samples["max_len"], samples["targets_per_user"])
    precision = teacher.precision
    # Stored at the precision they were computed in: bf16 states under bf16 autocast (half the size).
    dtype = "bfloat16" if precision == "bf16" else teacher.config.dtype
    states = TeacherStates.compute(
        teacher, dataset.input_ids, dataset.labels, distill["blocks"], dtype, call.resources["eval_batch_size"]
    )
    states.save(call.output["states"])
    call.write_manifest(extra={"precision": precision, "states_dtype": dtype})
    logger.info(
        "teacher states: %d samples at teacher layers %s, %.1f MB (%s, computed in %s)",
        len(dataset),
        states.layers,
        states.states.numel() * states.states.element_size() / 1e6,
        dtype,
        precision,
    )
    return states
