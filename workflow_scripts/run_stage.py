"""Every rule's script: the rule's stage (`slmrec.workflow.stage_of`) on its inputs, outputs, params and resources."""

from slmrec.workflow import run_stage

run_stage(snakemake)
