"""Rule `synthesize`: write the demo's synthetic amazon2018-format review file."""

from slmrec.data.synthetic import run
from slmrec.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    run(snakemake.params.source, snakemake.output)
