"""Rule `metrics`: one table with a row per model, efficiency figures and the student's speed-ups."""

from slmrec.workflow import run_stage

run_stage(snakemake, "metrics")
