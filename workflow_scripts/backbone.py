"""Rule `backbone`: build a preset checkpoint (randomly initialised) and its tokenizer locally."""

from slmrec.workflow import run_stage

run_stage(snakemake, "backbone")
