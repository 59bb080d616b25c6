"""Rule `download`: fetch the raw review file from the first mirror that answers."""

from slmrec.workflow import run_stage

run_stage(snakemake, "download")
