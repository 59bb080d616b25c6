"""Rule `teacher`: fine-tune the E4SRec-style LLM recommender (data-parallel when gpu > 1)."""

from slmrec.launch import launch
from slmrec.workflow import rule_logging

s = snakemake
with rule_logging(s.log[0]):
    launch(
        "slmrec.stages.llm:run",
        dict(
            splits_path=s.input.splits,
            negatives_path=s.input.negatives,
            stats_path=s.input.stats,
            item_embeddings_path=s.input.item_embeddings,
            backbone_dir=s.input.backbone,
            cfg=s.params.teacher,
            backbone=s.params.backbone,
            prompt=s.params.prompt,
            max_len=s.params.max_len,
            eval_cfg=s.params.evaluate,
            output=dict(s.output.items()),
            checkpoint_dir=s.params.checkpoints,
            layers=s.params.layers,
            eval_batch_size=s.resources.eval_batch_size,
            per_device_batch_size=s.resources.per_device_batch_size,
        ),
        processes=s.resources.gpu,
        log_path=s.log[0],
    )
