"""Rule `student`: SLMRec distillation into a small LLM recommender (data-parallel when gpu > 1)."""

from pathlib import Path

from slmrec.launch import launch
from slmrec.workflow import llm_stage_arguments, rule_logging

s = snakemake
with rule_logging(s.log[0]):
    target = s.wildcards.student
    names = {"student": "SLMRec", "student_online": "SLMRec_online"}
    arguments = {
        **llm_stage_arguments(s),
        "teacher_dir": str(Path(s.input.teacher[0]).parent) if s.input.teacher else None,
        "cfg": s.params.student,
        "teacher_cfg": s.params.teacher,
        "distill": s.params.distill,
        "name": names.get(target, "SLMRec_" + target.removeprefix("ablation/")),
    }
    launch("slmrec.stages.student:run", arguments, processes=s.resources.gpu, log_path=s.log[0])
