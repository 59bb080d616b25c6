"""Rule `direct_inference`: score users from intermediate layers of the trained deep teacher (Figure 2)."""

from slmrec.workflow import run_stage

run_stage(snakemake, "direct_inference")
