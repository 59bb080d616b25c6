"""Rule `ablation`: the Table 4 variants side by side."""

from slmrec.report import write_ablation
from slmrec.workflow import rule_logging

s = snakemake
with rule_logging(s.log[0]):
    variants = [path.split("/")[-2] for path in s.input]
    write_ablation(dict(zip(variants, s.input, strict=True)), s.output.table)
