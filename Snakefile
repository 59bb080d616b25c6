# slmrec: raw Amazon reviews -> SASRec -> LLM teacher -> distilled student -> metrics.
# Usage: snakemake --cores 8 results/<dataset>/<target>   (see README.md)

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "config.schema.yaml")


include: "rules/common.smk"


wildcard_constraints:
    dataset="|".join(DATASETS),


include: "rules/data.smk"
include: "rules/sasrec.smk"
include: "rules/llm.smk"
include: "rules/student.smk"
include: "rules/report.smk"


rule all:
    input:
        expand("results/{dataset}/metrics.json", dataset=DEMO_DATASETS),
        expand("results/{dataset}/report.md", dataset=DEMO_DATASETS),
    default_target: True
