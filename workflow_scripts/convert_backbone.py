"""Rule `convert_backbone`: a GGUF file, or a random-init control, as a Hugging Face checkpoint directory."""

from slmrec.workflow import run_stage

run_stage(snakemake, "convert_backbone")
