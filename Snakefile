# slmrec: raw Amazon reviews -> SASRec -> LLM teacher -> distilled student -> metrics.
# Usage: snakemake --cores 8 results/<dataset>/<target>   (see README.md)

import sys
from pathlib import Path

from snakemake.utils import min_version, validate

sys.path.insert(0, str(Path(workflow.basedir)))  # the library, also in a checkout that is not pip-installed

from slmrec.config import load_schema, prepare_config

min_version("9.0")


configfile: "config.yaml"


# `--config` values arrive untyped (Snakemake reads them with YAML's base loader), and a file's `1e-4` as a
# string (YAML 1.1): typed by the schema. NaN and infinities are refused. A variant (`datasets.<name>.base:
# <other>`) is its base's entry with its own keys merged over it.
config.update(prepare_config(config, load_schema(Path(workflow.basedir) / "config.schema.yaml")))
validate(config, "config.schema.yaml")


include: "rules/common.smk"


wildcard_constraints:
    dataset="|".join(DATASETS),


include: "rules/data.smk"
include: "rules/sasrec.smk"
include: "rules/llm.smk"
include: "rules/student.smk"
include: "rules/report.smk"
include: "rules/recommend.smk"


# Before the first job is submitted (never in a dry run): no CHANGE_ME placeholder left in the resources, a
# SLURM status command that can see this cluster's jobs, and every output this run will replace marked
# incomplete, so a failed run never leaves stale results looking current (see slmrec/cluster.py).
onstart:
    check_submission(
        workflow.dag.needrun_jobs(),
        workflow.executor_plugin.name,
        getattr(workflow.executor_settings, "status_command", None),
    )
    mark_pending(workflow.persistence, workflow.dag.needrun_jobs())


rule all:
    default_target: True
    input:
        expand(layout.table(), dataset=DEMO_DATASETS),
        expand(layout.table("report"), dataset=DEMO_DATASETS),
