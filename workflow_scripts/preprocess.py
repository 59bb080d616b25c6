"""Rule `preprocess`: raw reviews to numbered interactions and leave-one-out splits."""

from slmrec.data.preprocess import run
from slmrec.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    run(snakemake.input.raw, snakemake.params.source, snakemake.params.preprocess, snakemake.output)
