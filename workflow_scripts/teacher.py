"""Rule `teacher`: fine-tune the E4SRec-style LLM recommender (data-parallel when gpu > 1)."""

from slmrec.launch import launch
from slmrec.workflow import llm_stage_arguments, rule_logging

s = snakemake
with rule_logging(s.log[0]):
    arguments = {**llm_stage_arguments(s), "cfg": s.params.teacher, "layers": s.params.layers}
    launch("slmrec.stages.llm:run", arguments, processes=s.resources.gpu, log_path=s.log[0])
