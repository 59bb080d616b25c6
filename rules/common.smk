# Helpers shared by every rules/*.smk file: per-dataset stage settings, narrowed to what each stage reads,
# and the targets' paths, all derived from the vocabulary in slmrec/targets.py.

import re
from pathlib import Path

from slmrec import layout, rule_params, targets
from slmrec.cluster import check_submission, mark_pending, retry_unless_bad_input
from slmrec.models import presets
from slmrec.models.blocks import block_boundaries
from slmrec.config import canonical, check_dataset, load_schema, stage_config
from slmrec.data.fetch import missing_local_source

SCHEMA = load_schema(Path(workflow.basedir) / "config.schema.yaml")
DATASETS = sorted(config["datasets"])
DEMO_DATASETS = [d for d in DATASETS if config["datasets"][d]["source"]["kind"] == "synthetic"]
STAGES = [key for key in SCHEMA["$defs"] if key != "source" and key in SCHEMA["properties"]]

# Check every dataset's overrides now, so a typo fails before any job runs, whatever the target.
for _dataset in DATASETS:
    for _stage in STAGES:
        stage_config(config, SCHEMA, _dataset, _stage)

# Settings that must agree with each other or the backbone (layer counts, blocks, heads) are checked when a
# job that reads them joins the DAG: a dry run fails, and a dataset used only for its data is not refused.
CHECKED_STAGES = ("sasrec", "teacher", "student")


def dataset_settings(dataset, stage):
    if stage in CHECKED_STAGES:
        check_dataset(config, SCHEMA, dataset, stage)
    return stage_config(config, SCHEMA, dataset, stage)


def settings(stage, keys=None, drop=()):
    """An input function for `params:`: a dataset's merged settings of one stage, narrowed to `keys`
    (or without `drop`), so a stage is rerun only by the settings it reads."""

    def narrowed(wildcards):
        dataset_settings(wildcards.dataset, stage)  # checked against the backbone and the other stages
        return rule_params.section(config, SCHEMA, wildcards.dataset, stage, keys, drop)

    return narrowed


def checkpoints(wildcards, output):
    """Where a training job keeps its checkpoints: beside its target, under checkpoints/."""
    target = Path(output.metrics).parent.relative_to(layout.dataset_dir(wildcards.dataset))
    return layout.checkpoints(target.as_posix(), wildcards.dataset)


def source(dataset):
    return canonical(config["datasets"][dataset]["source"])


def parse_options(wildcards):
    """The parts of a source that change how it is parsed (not where it is fetched from)."""
    src = source(wildcards.dataset)
    return {k: v for k, v in src.items() if k in ("kind", "variant", "columns", "header")}


def raw_file(wildcards):
    """The raw review file: a local path used in place, a download, or the synthetic demo file.

    A local path that does not exist fails here, when a target of its dataset is requested (never for
    other targets, so the shipped config dry-runs without it), saying how to get the file."""
    src = source(wildcards.dataset)
    if "path" in src:
        if not Path(src["path"]).exists():
            raise FileNotFoundError(missing_local_source(wildcards.dataset, src["path"]))
        return src["path"]
    if src["kind"] == "synthetic":
        return layout.raw(layout.SYNTHETIC_FILE, wildcards.dataset)
    return layout.raw(src["file"], wildcards.dataset)


def configured_backbone(dataset, chosen):
    """A dataset's `backbone.path`, checked when a job that reads it joins the DAG (never for other targets): it
    exists, and a checkpoint directory has a config and a tokenizer and needs no code of its own."""
    presets.check_backbone(chosen["path"], f"datasets.{dataset}.backbone.path")
    return chosen["path"]


def check_dir_name(name, key, value):
    """Refuse `name`, derived from the setting `key` = `value`, unless it is a directory name: it is held to
    `source.file`'s pattern, for a `backbone.path` of `...gguf` would make it `..`, and results/backbones/.. is
    results/ itself."""
    if not re.fullmatch(SCHEMA["$defs"]["file_name"]["pattern"], name):
        raise presets.BackboneError(
            f"{key}: {value!r} gives the directory name {name!r}, which is not a plain name "
            "(a name must not be empty, '.' or '..', nor contain / or \\); rename the file"
        )


def converted_backbone(dataset):
    """(name, inputs, settings) of the backbone the `convert_backbone` rule writes for a dataset, or None.

    A GGUF file or a GGUF preset is converted; so is any backbone with `init: random` (the control).
    The name says what it is, e.g. `smollm2-135m` or `smollm2-135m-random0`, and is shared by datasets.
    """
    chosen = dataset_settings(dataset, "backbone")
    suffix = f"-random{chosen['seed']}" if chosen["init"] == "random" else ""
    if chosen["path"]:
        path = Path(chosen["path"])
        if not (presets.is_gguf(path) or suffix):
            return None
        name = f"{path.stem if presets.is_gguf(path) else path.name}{suffix}"
        check_dir_name(name, f"datasets.{dataset}.backbone.path", chosen["path"])
        return name, lambda: {"source": configured_backbone(dataset, chosen)}, chosen
    if chosen["preset"] in presets.GGUF_PRESETS:
        return f"{chosen['preset']}{suffix}", lambda: presets.preset_gguf(chosen["preset"]), chosen
    return None


CONVERTED_BACKBONES = {
    name: (source, chosen) for name, source, chosen in filter(None, map(converted_backbone, DATASETS))
}


def conversion_inputs(wildcards):
    """The `convert_backbone` rule's inputs: `source` (a GGUF file, its chunks, or a checkpoint directory) and, for a
    chunked preset, `sha256sums`."""
    return CONVERTED_BACKBONES[wildcards.backbone][0]()


def backbone_dir(wildcards):
    """The checkpoint directory the LLM stages load: a local one in place, a converted one, or the tiny preset."""
    converted = converted_backbone(wildcards.dataset)
    if converted:
        return layout.converted_backbone(converted[0])
    chosen = dataset_settings(wildcards.dataset, "backbone")
    if chosen["path"]:
        return configured_backbone(wildcards.dataset, chosen)
    if chosen["preset"]:
        return layout.backbone(wildcards.dataset)
    raise ValueError(
        f"datasets.{wildcards.dataset}.backbone: set `path` to a local Hugging Face checkpoint directory "
        "(e.g. Llama-2-7b-hf) or a .gguf file, or a `preset` (tiny, smollm2-135m)"
    )


# How the LLM stages load the backbone (which backbone is their input, not a setting).
backbone_loading = settings("backbone", keys=("dtype", "quantization", "precision"))


def teacher_layers(wildcards):
    dataset_settings(wildcards.dataset, "teacher")
    return rule_params.teacher_layers(config, SCHEMA, wildcards.dataset, wildcards.teacher)


def student_distill(wildcards):
    return rule_params.student_distill(config, SCHEMA, wildcards.dataset, wildcards.student)


def online_teacher(wildcards):
    """The teacher's settings, read only by a student that trains its teacher alongside (online)."""
    return dataset_settings(wildcards.dataset, "teacher") if student_distill(wildcards)["online"] else {}


def student_teacher_inputs(wildcards):
    """What a student reads of its trained teacher: its cached states, when a term compares the two, and its
    weights and config, to start from them or for the output projection of the score terms. A student that reads
    nothing of the teacher does not wait for one."""
    chosen = student_distill(wildcards)
    teacher = targets.student_teacher(wildcards.student)
    inputs = {}
    if targets.needs_offline_teacher(chosen):
        if teacher != targets.TEACHER and not targets.is_sasrec_student(wildcards.student):
            # The block map of a student_t{l} target, checked as the DAG is built.
            layers = targets.teacher_layers(teacher, dataset_settings(wildcards.dataset, "teacher")["layers"])
            student = dataset_settings(wildcards.dataset, "student")["layers"]
            block_boundaries(layers, student, dataset_settings(wildcards.dataset, "distill")["blocks"])
        inputs["teacher_states"] = layout.states(teacher, dataset=wildcards.dataset)
    if targets.needs_teacher_weights(chosen):
        inputs["teacher_weights"] = layout.model_file(teacher, "model", wildcards.dataset)
        if not targets.is_sasrec_student(wildcards.student):  # an LLM student names its teacher's depth from it
            inputs["teacher_config"] = layout.model_file(teacher, "config", wildcards.dataset)
    return inputs


def states_samples(wildcards):
    """The students' training samples, which the cached teacher states are aligned with."""
    return settings("student", keys=("max_len", "targets_per_user"))(wildcards)


def scored_samples(wildcards):
    """What a SASRec student reads of the teacher's samples, to find them among its own positions: nothing when
    no score term is on."""
    return states_samples(wildcards) if targets.needs_offline_teacher(student_distill(wildcards)) else {}


def states_distill(wildcards):
    """What the teacher-state pass reads of `distill`: the block map, and how to load the frozen teacher."""
    return settings("distill", keys=("blocks", "teacher_quantization"))(wildcards)


def reported_students(dataset):
    return dataset_settings(dataset, "report")["students"]


def trained_rows(dataset):
    """The trained models of one dataset's table: the teacher, each reported student and its own teacher."""
    students = reported_students(dataset)
    teachers = [targets.TEACHER, *(targets.student_teacher(s) for s in students)]
    return list(dict.fromkeys([*teachers, *students]))


def headline_pair(wildcards):
    """(student, teacher) targets of the table's speed-ups: the first reported student and its own teacher."""
    student = reported_students(wildcards.dataset)[0]
    return [student, targets.student_teacher(student)]


def recommended_model(wildcards):
    """What a model row is read from: its weights, and an LLM's config, item table and backbone; nothing for
    popularity, which counts the training items."""
    target, dataset = wildcards.model, wildcards.dataset
    if target == layout.POPULARITY:
        return {}
    files = {"model": layout.model_file(target, "model", dataset)}
    if layout.is_llm(target):
        files["config"] = layout.model_file(target, "config", dataset)
        files["item_embeddings"] = layout.item_embeddings(dataset)
        files["backbone"] = backbone_dir(wildcards)
    return files


def recommend_precision(wildcards):
    """How an LLM row computes (`backbone.precision`); the other rows read nothing of the backbone."""
    return settings("backbone", keys=("precision",))(wildcards) if layout.is_llm(wildcards.model) else {}


def result_rows(wildcards):
    """The metrics rows behind one dataset's table, by target."""
    authors = ["sasrec_authors"] if dataset_settings(wildcards.dataset, "report")["sasrec_authors"] else []
    rows = ["popularity", "sasrec", *authors, *trained_rows(wildcards.dataset)]
    return {target: layout.model_file(target, "metrics", wildcards.dataset) for target in rows}


def train_logs(wildcards):
    return [layout.model_file(t, "train_log", wildcards.dataset) for t in trained_rows(wildcards.dataset)]


def layer_sweep(wildcards):
    """The sweep's E4SRec_l rows; at the teacher's own depth, the teacher (never trained twice)."""
    deep = dataset_settings(wildcards.dataset, "teacher")["layers"]
    sweep = dataset_settings(wildcards.dataset, "report")["layer_sweep"]
    rows = [targets.TEACHER if n == deep else targets.sweep_teacher(n) for n in sweep]
    return [layout.model_file(target, "metrics", wildcards.dataset) for target in rows]


def direct_layers(wildcards):
    """The depths direct inference reads the trained teacher at: the layer sweep's, up to the teacher's own."""
    deep = dataset_settings(wildcards.dataset, "teacher")["layers"]
    sweep = dataset_settings(wildcards.dataset, "report")["layer_sweep"]
    return sorted({k for k in sweep if k <= deep} | {deep})


def report_direct(wildcards):
    """Direct inference joins the layer report whenever there is a layer sweep to compare it with."""
    if not dataset_settings(wildcards.dataset, "report")["layer_sweep"]:
        return {}
    return {"direct": layout.direct_inference("table", targets.TEACHER, wildcards.dataset)}


def ablation_variants(dataset):
    """The ablation's rows: the paper's Table 4, then with `report.kd_ablation` the score-distillation rows."""
    chosen = dataset_settings(dataset, "report")
    rows = [
        *(targets.PAPER_VARIANTS if chosen["ablation"] else ()),
        *(targets.KD_ROWS if chosen["kd_ablation"] else ()),
    ]
    return list(dict.fromkeys(rows))


def ablation_rows(wildcards):
    """The ablation's variants by name; `all` is the offline student and `sasrec` plain SASRec, never trained twice."""
    variants = ablation_variants(wildcards.dataset)
    return {v: layout.model_file(targets.ablation_target(v), "metrics", wildcards.dataset) for v in variants}


def report_ablation(wildcards):
    if not ablation_variants(wildcards.dataset):
        return {}
    return {"ablation": layout.ablation(dataset=wildcards.dataset)}


def report_comparisons(wildcards):
    """(A, B) targets the report compares user by user: each reported student against its own teacher and its
    CE-only twin (the same model without the teacher: for an LLM student the ablation's `ce`, when run; for
    SASRec, plain SASRec), and each score-distillation row of the ablation against its twin."""
    chosen = dataset_settings(wildcards.dataset, "report")

    def twins(student):
        if targets.is_sasrec_student(student):
            return [targets.SASREC]
        return [targets.ablation_target("ce")] if chosen["ablation"] or chosen["kd_ablation"] else []

    pairs = [
        [s, other] for s in reported_students(wildcards.dataset) for other in [*twins(s), targets.student_teacher(s)]
    ]
    kd = [v for v in ablation_variants(wildcards.dataset) if v in targets.KD_TWINS]
    return pairs + [[targets.ablation_target(v), targets.ablation_target(targets.KD_TWINS[v])] for v in kd]


def compared_targets(wildcards):
    """The targets whose ranks the report reads, in the order of its `ranks` input."""
    return list(dict.fromkeys(target for pair in report_comparisons(wildcards) for target in pair))


def compared_ranks(wildcards):
    return [layout.model_file(target, "ranks", wildcards.dataset) for target in compared_targets(wildcards)]


def report_settings(wildcards):
    """What the report's settings section shows: the distillation weights, K, the layer counts, the backbone
    and every seed, so two reports (say of two variants) say what they were made with."""

    def chosen(stage, keys=None):
        return settings(stage, keys=keys)(wildcards)

    return {
        "source": {k: v for k, v in source(wildcards.dataset).items() if k == "seed"},
        "negatives": chosen("negatives"),
        "sasrec": chosen("sasrec", ("hidden", "layers", "seed")),
        "backbone": chosen("backbone"),
        "teacher": chosen("teacher", ("layers", "seed")),
        "student": chosen("student", ("layers", "seed")),
        "distill": chosen(
            "distill", ("blocks", *(key for t in targets.LOSS_TERMS for key in (t.weight_key, *t.settings)))
        ),
        "report": chosen("report", ("layer_sweep",)),
    }


def random_backbone(wildcards):
    """Why the LLM backbone has no pretraining, for the report to say: "tiny" (the random miniature preset),
    "init" (a real architecture with random weights, `backbone.init: random`: the control), or "" (pretrained)."""
    chosen = dataset_settings(wildcards.dataset, "backbone")
    if not chosen["path"] and chosen["preset"] == "tiny":
        return "tiny"
    return "init" if chosen["init"] == "random" else ""


def report_to(wildcards):
    """A training job's experiment tracker (`training.report_to`). A resource, not a param: it changes no result, so
    switching it reruns nothing, and a killed run resumes under another."""
    return dataset_settings(wildcards.dataset, "training")["report_to"]


def sasrec_resources(rule):
    """SASRec's resources; `try_number` names the rule, whose bad-input records it reads."""
    return {
        "try_number": retry_unless_bad_input(rule),
        "mem_mb": lambda wildcards, attempt: 8000 * attempt,
        "runtime": 240,
        "gpu": 1,
        "eval_batch_size": 512,
        "report_to": report_to,
    }
