"""Rule `popularity`: the popularity reference row, scored like every model."""

from slmrec.stages.popularity import run
from slmrec.workflow import rule_logging

s = snakemake
with rule_logging(s.log[0]):
    run(s.input.splits, s.input.negatives, s.input.stats, s.params.evaluate, s.output)
