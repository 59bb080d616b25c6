"""Rule `sasrec`: pretrain SASRec and export its item-embedding table."""

from slmrec.stages.sasrec import run
from slmrec.workflow import rule_logging

s = snakemake
with rule_logging(s.log[0]):
    run(
        s.input.splits,
        s.input.negatives,
        s.input.stats,
        s.params.sasrec,
        s.params.max_len,
        s.params.evaluate,
        s.output,
        checkpoint_dir=s.params.checkpoints,
        eval_batch_size=s.resources.eval_batch_size,
    )
