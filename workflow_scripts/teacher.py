"""Rule `teacher`: fine-tune the E4SRec-style LLM recommender (data-parallel when gpu > 1)."""

from slmrec.workflow import run_stage

run_stage(snakemake, "teacher")
