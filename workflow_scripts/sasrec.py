"""Rule `sasrec`: pretrain SASRec and export its item-embedding table."""

from slmrec.workflow import run_stage

run_stage(snakemake, "sasrec")
