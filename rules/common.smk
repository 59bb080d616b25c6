# Helpers shared by every rules/*.smk file: per-dataset stage settings, narrowed to what each stage reads,
# and the targets' paths, all derived from the vocabulary in slmrec/targets.py.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from slmrec import targets
from slmrec.config import canonical, load_schema, stage_config

SCHEMA = load_schema(Path(workflow.basedir) / "config.schema.yaml")
DATASETS = sorted(config["datasets"])
DEMO_DATASETS = [d for d in DATASETS if config["datasets"][d]["source"]["kind"] == "synthetic"]
STAGES = [key for key in SCHEMA["$defs"] if key != "source" and key in SCHEMA["properties"]]

# Check every dataset's overrides now, so a typo fails before any job runs, whatever the target.
for _dataset in DATASETS:
    for _stage in STAGES:
        stage_config(config, SCHEMA, _dataset, _stage)


def dataset_settings(dataset, stage):
    return stage_config(config, SCHEMA, dataset, stage)


def settings(stage, keys=None, drop=()):
    """An input function for `params:`: a dataset's merged settings of one stage, narrowed to `keys`
    (or without `drop`), so a stage is rerun only by the settings it reads."""

    def narrowed(wildcards):
        chosen = dataset_settings(wildcards.dataset, stage)
        return {k: v for k, v in chosen.items() if (keys is None or k in keys) and k not in drop}

    return narrowed


def checkpoints(wildcards, output):
    """Where a training job keeps its checkpoints: beside its target, under checkpoints/."""
    target = Path(output.metrics).parent.relative_to(f"results/{wildcards.dataset}")
    return f"results/{wildcards.dataset}/checkpoints/{target}"


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
    chosen = dataset_settings(wildcards.dataset, "backbone")
    if chosen["path"]:
        return chosen["path"]
    if chosen["preset"]:
        return f"results/{wildcards.dataset}/backbone"
    raise ValueError(
        f"datasets.{wildcards.dataset}.backbone: set `path` to a local Hugging Face checkpoint directory "
        "(e.g. Llama-2-7b-hf), or `preset: tiny` for the randomly initialised miniature"
    )


# How the LLM stages load the backbone (which backbone is their input, not a setting).
backbone_loading = settings("backbone", keys=("dtype", "quantization"))


def teacher_layers(wildcards):
    return targets.teacher_layers(wildcards.teacher, dataset_settings(wildcards.dataset, "teacher")["layers"])


def student_distill(wildcards):
    return targets.student_distill(wildcards.student, dataset_settings(wildcards.dataset, "distill"))


def online_teacher(wildcards):
    """The teacher's settings, read only by a student that trains its teacher alongside (online)."""
    return dataset_settings(wildcards.dataset, "teacher") if student_distill(wildcards)["online"] else {}


def teacher_artifact(wildcards):
    """The trained teacher an offline student learns from; a variant that needs none does not wait for one."""
    if not targets.needs_offline_teacher(student_distill(wildcards)):
        return {}
    teacher = f"results/{wildcards.dataset}/{targets.TEACHER}"
    return {"teacher": f"{teacher}/trainable.safetensors", "teacher_config": f"{teacher}/config.json"}


def reported_students(dataset):
    return dataset_settings(dataset, "report")["students"]


def result_rows(wildcards):
    """The metrics rows behind one dataset's table, by target."""
    rows = ["popularity", "sasrec", targets.TEACHER, *reported_students(wildcards.dataset)]
    return {target: f"results/{wildcards.dataset}/{target}/metrics.json" for target in rows}


def train_logs(wildcards):
    trained = [targets.TEACHER, *reported_students(wildcards.dataset)]
    return [f"results/{wildcards.dataset}/{target}/train_log.csv" for target in trained]


def layer_sweep(wildcards):
    sweep = dataset_settings(wildcards.dataset, "report")["layer_sweep"]
    return [f"results/{wildcards.dataset}/{targets.sweep_teacher(n)}/metrics.json" for n in sweep]


def ablation_rows(wildcards):
    """Table 4's variants by name; the variant with every term is the offline student, never trained twice."""
    variants = targets.ABLATION_VARIANTS
    return {v: f"results/{wildcards.dataset}/{targets.ablation_target(v)}/metrics.json" for v in variants}


def report_ablation(wildcards):
    if not dataset_settings(wildcards.dataset, "report")["ablation"]:
        return {}
    return {"ablation": f"results/{wildcards.dataset}/{targets.ABLATION}/metrics.json"}


def synthetic_backbone(wildcards):
    """Whether the LLM backbone is the randomly initialised preset (the report then says so)."""
    chosen = dataset_settings(wildcards.dataset, "backbone")
    return not chosen["path"] and chosen["preset"] == "tiny"
