"""Rule `download`: fetch the raw review file from the first mirror that answers."""

from slmrec.data.download import run
from slmrec.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    run(snakemake.params.urls, snakemake.params.sha256, snakemake.output)
