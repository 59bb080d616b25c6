"""Small on-disk datasets for stage tests: the real synthesize -> preprocess -> negatives chain, in a tmp dir."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from slmrec import layout
from slmrec.call import StageCall
from slmrec.config import schema_defaults
from slmrec.data.negatives import draw_negatives
from slmrec.data.preprocess import preprocess, read_amazon2018
from slmrec.data.synthetic import write_synthetic_reviews
from slmrec.io import write_json
from slmrec.targets import student_distill

# Runtime resources the training rules declare (rules/*.smk); small evaluation batches for tests.
RESOURCES = {
    "eval_batch_size": 64,
    "per_device_batch_size": 0,
    "gpu": 1,
    "report_to": schema_defaults("training")["report_to"],
}


def stage_call(
    stage: str, inputs: dict[str, Any], output: SimpleNamespace, params: dict[str, Any], **resources
) -> StageCall:
    """The call a rule makes: named inputs and outputs, `params:` and resources."""
    inputs = {k: str(v) for k, v in inputs.items()}
    return StageCall(stage, inputs, {k: str(v) for k, v in vars(output).items()}, params, {**RESOURCES, **resources})


def data_inputs(data: SimpleNamespace) -> dict[str, str]:
    """The preprocess and negatives artifacts every model stage reads."""
    return {"splits": data.splits, "negatives": data.negatives, "stats": data.stats}


def model_dir_files(target: str) -> dict[str, str]:
    """A model directory's files by output name, the manifest included (`slmrec.layout`)."""
    return {**layout.model_files(target), "manifest": layout.MANIFEST}


SASREC_OUTPUTS = tuple(model_dir_files("sasrec"))


def make_dataset(
    directory: Path, users: int, items: int, num_negatives: int, seed: int = 7, **sequence_options: Any
) -> SimpleNamespace:
    """Write raw reviews, splits.parquet, stats.json and negatives.parquet under `directory`.

    Returns their paths (as str, like Snakemake passes them) plus the number of items.
    """
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / "raw.json.gz"
    options = {**schema_defaults("source"), "users": users, "items": items, "seed": seed, **sequence_options}
    write_synthetic_reviews(raw, **{k: v for k, v in options.items() if k != "kind"})
    cfg = schema_defaults("preprocess")
    result = preprocess(read_amazon2018(raw, cfg["on_bad_line"]), cfg["min_rating"], cfg["kcore"])
    paths = SimpleNamespace(
        dir=directory,
        splits=str(directory / "splits.parquet"),
        stats=str(directory / "stats.json"),
        negatives=str(directory / "negatives.parquet"),
        num_items=result.stats["items"],
        num_users=result.stats["users"],
    )
    result.splits.write_parquet(paths.splits)
    write_json(paths.stats, result.stats)
    draw_negatives(
        result.splits, result.stats["items"], num_negatives, schema_defaults("negatives")["seed"]
    ).write_parquet(paths.negatives)
    return paths


def sasrec_outputs(directory: Path) -> SimpleNamespace:
    """The `output` object `slmrec.stages.sasrec.run` expects, with every file under `directory`."""
    return SimpleNamespace(**{key: str(directory / name) for key, name in model_dir_files("sasrec").items()})


def sasrec_params(
    checkpoints: Path, cfg: dict[str, Any] | None = None, full_ranking: bool = False, authors: bool = False
) -> dict[str, Any]:
    """The params the `sasrec` rule gives its stage (the `sasrec_authors` rule's, with `authors`)."""
    return {
        "target": "sasrec_authors" if authors else "sasrec",
        "sasrec": cfg or sasrec_config(),
        "authors_protocol": authors,
        "evaluate": {"full_ranking": full_ranking},
        "checkpoints": str(checkpoints),
    }


def sasrec_config(**overrides: Any) -> dict[str, Any]:
    """A small, fast `sasrec` section: the schema's defaults with a smaller model and fewer epochs."""
    small = {"hidden": 32, "layers": 1, "lr": 0.005, "batch_size": 64, "epochs": 2, "patience": 3, "max_len": 20}
    return {**schema_defaults("sasrec"), **small, **overrides}


# --- the LLM stages (teacher, student) ---------------------------------------------------------

LLM_OUTPUTS = model_dir_files("teacher")


def make_backbone(directory: Path, seed: int = 0) -> str:
    """The `tiny` preset (random LLaMA, 8 layers, hidden 64) and its tokenizer, as the `backbone` rule writes it."""
    from slmrec.models.presets import build_preset

    prompt = prompt_settings()
    build_preset("tiny", directory, [prompt["prefix"], prompt["suffix"]], seed=seed)
    return str(directory)


def write_item_table(path: Path, num_items: int, dim: int = 16, seed: int = 0) -> str:
    """A random stand-in for SASRec's exported `item_embeddings.safetensors` ([items + 1, dim])."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    save_file({"item_embeddings": torch.randn(num_items + 1, dim, generator=generator)}, str(path))
    return str(path)


def llm_outputs(directory: Path) -> SimpleNamespace:
    """The `output` object the teacher and student stages expect, with every file under `directory`."""
    return SimpleNamespace(**{key: str(directory / name) for key, name in LLM_OUTPUTS.items()})


def llm_config(**overrides: Any) -> dict[str, Any]:
    """A tiny, fast `teacher` section: the schema's defaults with 2 layers, small LoRA and a few steps."""
    lora = {**schema_defaults("teacher")["lora"], "r": 4, "alpha": 8, "dropout": 0.0}
    small = {"layers": 2, "lora": lora, "batch_size": 16, "learning_rate": 0.01, "warmup_steps": 0, "max_steps": 4}
    return {**schema_defaults("teacher"), **small, "eval_steps": 2, "max_len": 20, **overrides}


def backbone_settings(**overrides: Any) -> dict[str, Any]:
    """What the LLM stages read of `backbone`: how it is loaded and computes. float32, whatever the CPU: the unit
    tests compare the model's paths at tight tolerances; tests/test_precision.py covers bf16 autocast."""
    return {"dtype": "float32", "quantization": "none", "precision": "float32", **overrides}


def prompt_settings() -> dict[str, str]:
    return schema_defaults("prompt")


def distill_settings(target: str = "student", **overrides: Any) -> dict[str, Any]:
    """What a student target reads of `distill`, for 2-block distillation (e.g. 4 teacher layers into 2)."""
    return student_distill(target, {**schema_defaults("distill"), "blocks": 2, **overrides})


def ranking_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """A split's metrics as its ranks give them: all but `seconds`, the time it took to score."""
    return {k: v for k, v in metrics.items() if k != "seconds"}


INTERVAL = r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\], p = [\d.e-]+"  # a PairedDifference.text(), as a regex
