# Helpers shared by every rules/*.smk file, for per-dataset stage settings and raw-input resolution.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from slmrec.config import ABLATION_TERMS, canonical, load_schema, stage_config, variant_settings

SCHEMA = load_schema(Path(workflow.basedir) / "config.schema.yaml")
DATASETS = sorted(config["datasets"])
DEMO_DATASETS = [d for d in DATASETS if config["datasets"][d]["source"]["kind"] == "synthetic"]
STAGES = [key for key in SCHEMA["$defs"] if key != "source" and key in SCHEMA["properties"]]

# Check every dataset's overrides now, so a typo fails before any job runs, whatever the target.
for _dataset in DATASETS:
    for _stage in STAGES:
        stage_config(config, SCHEMA, _dataset, _stage)

ABLATION_VARIANTS = list(ABLATION_TERMS)


def dataset_settings(dataset, stage):
    return stage_config(config, SCHEMA, dataset, stage)


def settings(stage):
    """An input function for `params:` giving a dataset's merged settings of one stage."""
    return lambda wildcards: dataset_settings(wildcards.dataset, stage)


def source(dataset):
    return canonical(config["datasets"][dataset]["source"])


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


def distill_settings(wildcards):
    """The distill settings of one student target (offline, online, or an ablation variant)."""
    return variant_settings(settings("distill")(wildcards), wildcards.student)


def teacher_artifact(wildcards):
    """The offline teacher a student learns from; a variant that needs no teacher does not wait for one."""
    chosen = distill_settings(wildcards)
    if chosen["mode"] == "online" or (chosen["cos_weight"] == 0 and chosen["l2_weight"] == 0):
        return []
    return [f"results/{wildcards.dataset}/teacher/trainable.safetensors"]


def reported_students(dataset):
    mode = dataset_settings(dataset, "distill")["mode"]
    return {"offline": ["student"], "online": ["student_online"], "both": ["student", "student_online"]}[mode]


def result_rows(wildcards):
    """The metrics files behind one dataset's table, by stage name."""
    rows = {
        "popularity": f"results/{wildcards.dataset}/popularity/metrics.json",
        "sasrec": f"results/{wildcards.dataset}/sasrec/metrics.json",
        "teacher": f"results/{wildcards.dataset}/teacher/metrics.json",
    }
    for student in reported_students(wildcards.dataset):
        rows[student] = f"results/{wildcards.dataset}/{student}/metrics.json"
    return rows


def layer_sweep(wildcards):
    sweep = dataset_settings(wildcards.dataset, "report")["layer_sweep"]
    return {f"teacher_l{n}": f"results/{wildcards.dataset}/teacher_l{n}/metrics.json" for n in sweep}


def report_extras(wildcards):
    extras = {f"log_{name}": path.replace("metrics.json", "train_log.csv") for name, path in result_rows(wildcards).items() if name not in ("popularity", "sasrec")}
    if dataset_settings(wildcards.dataset, "report")["ablation"]:
        extras["ablation"] = f"results/{wildcards.dataset}/ablation/metrics.json"
    return extras
