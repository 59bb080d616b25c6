"""Rule `student`: SLMRec distillation into a small LLM recommender (data-parallel when gpu > 1)."""

from pathlib import Path

from slmrec.launch import launch
from slmrec.workflow import rule_logging

s = snakemake
with rule_logging(s.log[0]):
    names = {"student": "SLMRec", "student_online": "SLMRec_online"}
    launch(
        "slmrec.stages.student:run",
        dict(
            splits_path=s.input.splits,
            negatives_path=s.input.negatives,
            stats_path=s.input.stats,
            item_embeddings_path=s.input.item_embeddings,
            backbone_dir=s.input.backbone,
            teacher_dir=str(Path(s.input.teacher[0]).parent) if s.input.teacher else None,
            cfg=s.params.student,
            teacher_cfg=s.params.teacher,
            distill=s.params.distill,
            backbone=s.params.backbone,
            prompt=s.params.prompt,
            max_len=s.params.max_len,
            eval_cfg=s.params.evaluate,
            output=dict(s.output.items()),
            checkpoint_dir=s.params.checkpoints,
            name=names.get(s.wildcards.student, "SLMRec_" + s.wildcards.student.removeprefix("ablation/")),
            eval_batch_size=s.resources.eval_batch_size,
            per_device_batch_size=s.resources.per_device_batch_size,
        ),
        processes=s.resources.gpu,
        log_path=s.log[0],
    )
