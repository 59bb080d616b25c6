"""Rule `report`: report.md with the tables, dataset statistics and figures."""

from slmrec.workflow import run_stage

run_stage(snakemake, "report")
