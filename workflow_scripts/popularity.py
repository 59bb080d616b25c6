"""Rule `popularity`: the popularity reference row, scored like every model."""

from slmrec.workflow import run_stage

run_stage(snakemake, "popularity")
