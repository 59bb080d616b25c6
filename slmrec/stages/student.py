"""The `student` stage: SLMRec distillation (offline or online), also used for the Table 4 ablation."""

from __future__ import annotations

import logging
from typing import Any

from slmrec.config import DISTILL_TERMS
from slmrec.io import utc_now
from slmrec.models.distill import Distiller, DistillWeights
from slmrec.models.llmrec import build_llmrec, load_llmrec
from slmrec.stages.llm import Job, llm_parameters, model_config, prepare, train_and_save

logger = logging.getLogger(__name__)


def weights_of(distill: dict[str, Any]) -> DistillWeights:
    return DistillWeights(**{term: distill[f"{term}_weight"] for term in DISTILL_TERMS})


def run(
    splits_path: str,
    negatives_path: str,
    stats_path: str,
    item_embeddings_path: str,
    backbone_dir: str,
    teacher_dir: str | None,
    cfg: dict[str, Any],
    teacher_cfg: dict[str, Any],
    distill: dict[str, Any],
    backbone: dict[str, Any],
    prompt: dict[str, str],
    max_len: int,
    eval_cfg: dict[str, Any],
    output: Any,
    checkpoint_dir: str,
    name: str = "SLMRec",
    eval_batch_size: int = 512,
    per_device_batch_size: int = 0,
) -> dict[str, Any] | None:
    """Distil into a `cfg['layers']`-layer student; `teacher_dir` is the teacher stage's artifact (offline)."""
    started = utc_now()
    inputs = [splits_path, negatives_path, stats_path, item_embeddings_path]
    table, eval_splits, dataset = prepare(*inputs, max_len, cfg["targets_per_user"])
    weights = weights_of(distill)
    online = distill["mode"] == "online"

    student = build_llmrec(model_config(backbone_dir, backbone, prompt, cfg["layers"], table, cfg), table, cfg["seed"])
    teacher = None
    if online:
        teacher_config = model_config(backbone_dir, backbone, prompt, teacher_cfg["layers"], table, teacher_cfg)
        teacher = build_llmrec(teacher_config, table, teacher_cfg["seed"])
    elif weights.needs_teacher:
        if not teacher_dir:
            raise ValueError("offline distillation with cosine or L2 terms needs the teacher stage's artifact")
        teacher = load_llmrec(teacher_dir, table, quantization=distill["teacher_quantization"])
    model = Distiller(student, teacher, distill["blocks"], weights, online=online)
    logger.info(
        "%s: student %d layers, teacher %s, blocks %s, weights %s, %s",
        name,
        student.num_layers,
        teacher.num_layers if teacher is not None else "none",
        model.boundaries,
        weights,
        "online" if online else "offline",
    )
    job = Job(max_len, eval_cfg, output, checkpoint_dir, backbone["dtype"], eval_batch_size, per_device_batch_size)
    return train_and_save(
        model,
        student,
        dataset,
        eval_splits,
        cfg,
        job,
        stage="student",
        name=name,
        fingerprint={"cfg": cfg, "distill": distill, "teacher": teacher_cfg},
        manifest={
            "config": {"student": cfg, "distill": distill, "backbone": backbone, "prompt": prompt, "max_len": max_len},
            "inputs": inputs + ([f"{teacher_dir}/trainable.safetensors"] if teacher_dir and not online else []),
            "started": started,
        },
        extra={
            "distill": distill,
            "boundaries": model.boundaries,
            "teacher_params": llm_parameters(teacher) if teacher is not None else None,
        },
    )
