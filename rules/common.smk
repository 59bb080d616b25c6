# Helpers shared by every rules/*.smk file, for per-dataset stage settings and raw-input resolution.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from slmrec.config import load_schema, stage_config

SCHEMA = load_schema(Path(workflow.basedir) / "config.schema.yaml")
DATASETS = sorted(config["datasets"])
DEMO_DATASETS = [d for d in DATASETS if config["datasets"][d]["source"]["kind"] == "synthetic"]
STAGES = [key for key in SCHEMA["$defs"] if key != "source" and key in SCHEMA["properties"]]

# Check every dataset's overrides now, so a typo fails before any job runs, whatever the target.
for _dataset in DATASETS:
    for _stage in STAGES:
        stage_config(config, SCHEMA, _dataset, _stage)


def settings(stage):
    """An input function for `params:` giving a dataset's merged settings of one stage."""
    return lambda wildcards: stage_config(config, SCHEMA, wildcards.dataset, stage)


def source(dataset):
    return config["datasets"][dataset]["source"]


def parse_options(wildcards):
    """The parts of a source that change how it is parsed (not where it is fetched from)."""
    src = source(wildcards.dataset)
    return {k: v for k, v in src.items() if k in ("kind", "columns", "header")}


def raw_file(wildcards):
    """The raw review file: a local path used in place, a download, or the synthetic demo file."""
    src = source(wildcards.dataset)
    if "path" in src:
        return src["path"]
    if src["kind"] == "synthetic":
        return f"results/{wildcards.dataset}/raw/synthetic_5.json.gz"
    return f"results/{wildcards.dataset}/raw/{src['file']}"


def backbone_dir(wildcards):
    """A local checkpoint (backbone.path), or the preset the `backbone` rule builds for this dataset."""
    chosen = settings("backbone")(wildcards)
    if chosen["path"]:
        return chosen["path"]
    if chosen["preset"]:
        return f"results/{wildcards.dataset}/backbone"
    raise ValueError(
        f"datasets.{wildcards.dataset}.backbone: set `path` to a local Hugging Face checkpoint directory "
        "(e.g. Llama-2-7b-hf), or `preset: tiny` for the randomly initialised miniature"
    )


def teacher_layers(wildcards):
    """`teacher` uses teacher.layers; `teacher_l{n}` (E4SRec_n of the layer sweep) uses n."""
    suffix = wildcards.teacher.removeprefix("teacher")
    return int(suffix.removeprefix("_l")) if suffix else settings("teacher")(wildcards)["layers"]
