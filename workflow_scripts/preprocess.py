"""Rule `preprocess`: raw reviews to numbered interactions and leave-one-out splits."""

from slmrec.workflow import run_stage

run_stage(snakemake, "preprocess")
