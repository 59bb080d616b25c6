"""Rule `negatives`: draw the fixed evaluation negatives once, for every model to share."""

from slmrec.data.negatives import run
from slmrec.workflow import rule_logging

s = snakemake
with rule_logging(s.log[0]):
    run(s.input.splits, s.input.stats, s.input.user_ids, s.params.negatives, s.output)
