"""Rule `teacher_states`: the frozen teacher's block-boundary states for every student training sample."""

from slmrec.workflow import run_stage

run_stage(snakemake, "teacher_states")
