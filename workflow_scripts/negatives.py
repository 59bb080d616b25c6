"""Rule `negatives`: draw the fixed evaluation negatives once, for every model to share."""

from slmrec.workflow import run_stage

run_stage(snakemake, "negatives")
