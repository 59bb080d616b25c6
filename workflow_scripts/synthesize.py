"""Rule `synthesize`: write the demo's synthetic amazon2018-format review file."""

from slmrec.workflow import run_stage

run_stage(snakemake, "synthesize")
