"""Where every artifact of the pipeline lives: the one map of `results/`.

The rules (through rules/common.smk), the summaries, `compare`, the benchmarks and the tests take their paths from
here, so renaming an artifact is one edit. Each function returns a path as a string; with the default dataset
`{dataset}` (and a target such as `{teacher}`) it is a Snakemake pattern, with names it is a concrete path, under
`root` (`results` by default).
"""

from __future__ import annotations

from pathlib import Path

from slmrec.targets import LLM_STUDENT_PATTERN, STUDENT_PATTERN, TEACHER_PATTERN, is_sasrec_student

RESULTS = "results"
DATASET = "{dataset}"
BACKBONES = "backbones"  # results/backbones/: converted checkpoints shared by every dataset

# A scored model's directory, results/<dataset>/<target>/: its files by output name, in the rules' output order.
SCORED = {"metrics": "metrics.json", "ranks": "ranks.parquet"}
SASREC_FILES = {
    "model": "model.safetensors",
    "item_embeddings": "item_embeddings.safetensors",
    **SCORED,
    "train_log": "train_log.csv",
}
LLM_FILES = {"model": "trainable.safetensors", "config": "config.json", **SCORED, "train_log": "train_log.csv"}
SASREC_TARGETS = ("sasrec", "sasrec_authors")
POPULARITY = "popularity"
MANIFEST = "manifest.json"
# The prepared data, results/<dataset>/data/: preprocess's outputs, then the negatives.
DATA_FILES = {
    "interactions": "interactions.parquet",
    "user_ids": "users.parquet",
    "item_ids": "items.parquet",
    "splits": "splits.parquet",
    "stats": "stats.json",
}
NEGATIVES = "negatives.parquet"
SYNTHETIC_FILE = "synthetic_5.json.gz"  # the demo's generated review file, in the Amazon 2018 layout
FIGURES = ("training_curves", "layer_sweep")  # the report's plots, results/<dataset>/<name>.png
# Every model row a metrics table may hold (what `recommend` takes), and the LLM ones among them (what `export` takes).
MODEL_PATTERN = "|".join([POPULARITY, *SASREC_TARGETS, TEACHER_PATTERN, STUDENT_PATTERN])
LLM_PATTERN = f"{TEACHER_PATTERN}|{LLM_STUDENT_PATTERN}"
RECOMMENDATIONS = "recommendations"  # results/<dataset>/recommendations/<target>.parquet, and its shards
EXPORT_VARIANTS = ("float32", "bf16", "int8", "4bit")  # how an export stores the decoder's weights
# An export, results/<dataset>/export/<target>/<variant>/: one flat directory that `slmrec.export.load_export` reads
# alone. The decoder (the kept layers, LoRA merged, and the prompt's embedding rows) is a Hugging Face checkpoint,
# config.json and weights, beside the tokenizer's files; the int8 variant keeps its weights in a file of its own.
EXPORT_FILES = {
    "int8": "decoder.int8.safetensors",  # int8 variant: int8 linear weights with per-row scales, the rest float32
    "recommender": "recommender.safetensors",  # item table, projections, the prompt's token ids and their rows
    "settings": "recommender.json",  # the model's settings, the variant, what it was exported from
    "items": DATA_FILES["item_ids"],  # internal item id -> raw item id
}


def dataset_dir(dataset: str = DATASET, root: str | Path = RESULTS) -> str:
    return f"{Path(root).as_posix()}/{dataset}"


def data_file(name: str, dataset: str = DATASET, root: str | Path = RESULTS) -> str:
    """One of `DATA_FILES`, `negatives`, or a manifest: `manifest` (preprocess's), `negatives_manifest`."""
    files = {
        **DATA_FILES,
        "negatives": NEGATIVES,
        "manifest": MANIFEST,
        "negatives_manifest": "negatives.manifest.json",
    }
    return f"{dataset_dir(dataset, root)}/data/{files[name]}"


def data_inputs(dataset: str = DATASET, root: str | Path = RESULTS) -> dict[str, str]:
    """What every stage that trains or scores a model reads of the data: the splits, negatives and statistics."""
    return {name: data_file(name, dataset, root) for name in ("splits", "negatives", "stats")}


def model_files(target: str) -> dict[str, str]:
    """A model directory's files by output name: SASRec's (SASRec students' too), the popularity reference's, or an
    LLM model's."""
    if target in SASREC_TARGETS or is_sasrec_student(target):
        return SASREC_FILES
    return SCORED if target == POPULARITY else LLM_FILES


def is_llm(target: str) -> bool:
    """Whether `target` is an LLM model (a teacher or an LLM student), whose directory holds `LLM_FILES`."""
    return model_files(target) is LLM_FILES


def model_file(target: str, name: str, dataset: str = DATASET, root: str | Path = RESULTS) -> str:
    """A file of `results/<dataset>/<target>/` by its output name (`manifest` too)."""
    file = MANIFEST if name == "manifest" else model_files(target)[name]
    return f"{dataset_dir(dataset, root)}/{target}/{file}"


def model_outputs(target: str, dataset: str = DATASET, files: dict[str, str] | None = None) -> dict[str, str]:
    """Every output of the rule that trains (or scores) `target`, its manifest last; `files` for a wildcard target
    whose kind its name does not tell (`{student}` of the SASRec students' rule)."""
    files = files or model_files(target)
    directory = f"{dataset_dir(dataset)}/{target}"
    return {name: f"{directory}/{file}" for name, file in {**files, "manifest": MANIFEST}.items()}


def item_embeddings(dataset: str = DATASET, root: str | Path = RESULTS) -> str:
    """SASRec's item table, which every LLM stage freezes."""
    return model_file("sasrec", "item_embeddings", dataset, root)


def states(teacher: str, name: str = "states", dataset: str = DATASET, root: str | Path = RESULTS) -> str:
    """A teacher's cached states for its students (`states`) or their manifest (`manifest`)."""
    file = {"states": "states.safetensors", "manifest": "states.manifest.json"}[name]
    return f"{dataset_dir(dataset, root)}/{teacher}/{file}"


def direct_inference(name: str, teacher: str, dataset: str = DATASET, root: str | Path = RESULTS) -> str:
    """The deep teacher read at intermediate layers: `table`, `ranks` or `manifest`."""
    file = {"table": "direct_inference.json", "ranks": "direct_inference.ranks.parquet"}.get(
        name, "direct_inference.manifest.json"
    )
    return f"{dataset_dir(dataset, root)}/{teacher}/{file}"


def table(name: str = "metrics", dataset: str = DATASET, root: str | Path = RESULTS) -> str:
    """A dataset's own results: the metrics table (`metrics`), its `manifest`, the `report`, or a figure."""
    files = {"metrics": "metrics.json", "manifest": MANIFEST, "report": "report.md", **{f: f"{f}.png" for f in FIGURES}}
    return f"{dataset_dir(dataset, root)}/{files[name]}"


def ablation(name: str = "metrics", dataset: str = DATASET) -> str:
    """The Table 4 ablation's table (`metrics`) or its `manifest`."""
    return f"{dataset_dir(dataset)}/ablation/{MANIFEST if name == 'manifest' else 'metrics.json'}"


def recommendations(target: str, dataset: str = DATASET, name: str = "parquet") -> str:
    """A model's top-k for every user (`parquet`) or its `manifest`."""
    suffix = {"parquet": ".parquet", "manifest": ".manifest.json"}[name]
    return f"{dataset_dir(dataset)}/{RECOMMENDATIONS}/{target}{suffix}"


def recommendation_shard(target: str, shard: str, dataset: str = DATASET, name: str = "parquet") -> str:
    """One shard's part of `recommendations` (`parquet`) or its `manifest`; `shard` is Snakemake's `2-of-3`."""
    suffix = {"parquet": ".parquet", "manifest": ".manifest.json"}[name]
    return f"{dataset_dir(dataset)}/{RECOMMENDATIONS}/shards/{target}/{shard}{suffix}"


def export(target: str, variant: str, dataset: str = DATASET, root: str | Path = RESULTS) -> str:
    """The self-contained directory of an LLM model for serving (`EXPORT_FILES`, a tokenizer, a manifest)."""
    return f"{dataset_dir(dataset, root)}/export/{target}/{variant}"


def raw(file: str, dataset: str = DATASET, manifest: bool = False) -> str:
    """A downloaded (or synthetic) review file, or its manifest."""
    return f"{dataset_dir(dataset)}/raw/{file}{'.manifest.json' if manifest else ''}"


def log(job: str, dataset: str = DATASET, root: str | Path = RESULTS) -> str:
    """A job's log; its Snakemake benchmark file is `benchmark(job)`."""
    return f"{dataset_dir(dataset, root)}/logs/{job}.log"


def benchmark(job: str, dataset: str = DATASET) -> str:
    return f"{dataset_dir(dataset)}/logs/{job}.benchmark.tsv"


def logs_dir(dataset: str, root: str | Path = RESULTS) -> Path:
    """Where a dataset's job logs and benchmark files are."""
    return Path(dataset_dir(dataset, root)) / "logs"


def checkpoints(target: str, dataset: str = DATASET) -> str:
    """A training job's checkpoints: not an output, so that a killed job resumes from them."""
    return f"{dataset_dir(dataset)}/checkpoints/{target}"


def runs(model_dir: str | Path) -> str:
    """The experiment tracker's logs of the model trained into `model_dir` (`training.report_to`), beside its files:
    not an output, so Snakemake neither waits for them nor removes them."""
    return f"{Path(model_dir).as_posix()}/runs"


def backbone(dataset: str = DATASET) -> str:
    """The tiny preset, built for one dataset."""
    return f"{dataset_dir(dataset)}/backbone"


def converted_backbone(name: str) -> str:
    """A converted GGUF checkpoint (or its random-init control), shared by every dataset."""
    return f"{dataset_dir(BACKBONES)}/{name}"


def rescored_ranks(dataset: str, target: str, root: str | Path = RESULTS) -> str:
    """Per-user ranks that `experiments/precision.py` computed again for a model made before models wrote their
    own (`user`, `valid`, `test`)."""
    return f"{Path(root).as_posix()}/per_user_ranks/{dataset}/{target.replace('/', '_')}.parquet"
