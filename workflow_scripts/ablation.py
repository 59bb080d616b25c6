"""Rule `ablation`: the Table 4 variants side by side."""

from slmrec.workflow import run_stage

run_stage(snakemake, "ablation")
