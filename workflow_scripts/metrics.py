"""Rule `metrics`: one table with a row per model, efficiency figures and the student's speed-ups."""

from slmrec.report import run_metrics
from slmrec.workflow import rule_logging

s = snakemake
with rule_logging(s.log[0]):
    rows = {name: path for name, path in s.input.items() if name != "stats"}
    run_metrics(s.wildcards.dataset, rows, s.input.stats, s.output)
