"""Rule `backbone`: build a preset checkpoint (randomly initialised) and its tokenizer locally."""

from slmrec.models.presets import run
from slmrec.workflow import rule_logging

s = snakemake
with rule_logging(s.log[0]):
    prompt = s.params.prompt
    run(s.params.backbone["preset"], s.params.backbone["seed"], [prompt["prefix"], prompt["suffix"]], s.output)
