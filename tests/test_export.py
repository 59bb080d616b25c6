"""The `export` rule and `load_export`: a trained LLM model as a self-contained directory, on the tiny demo
(`served_demo`, conftest)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from conftest import RECOMMEND_K
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer

from slmrec import layout
from slmrec.call import StageCall
from slmrec.errors import ConfigError
from slmrec.export import export_llmrec, load_export
from slmrec.models.llmrec import load_llmrec
from slmrec.models.sasrec import load_item_embeddings
from slmrec.recommend import IdMap, KnownUsers, recommendations_frame
from slmrec.stages import export as export_stage

pytestmark = pytest.mark.e2e


def known_users(workdir: Path) -> tuple[KnownUsers, IdMap]:
    data = workdir / "results" / "demo" / "data"
    return KnownUsers.read(data / layout.DATA_FILES["splits"]), IdMap.read(data / layout.DATA_FILES["user_ids"], "user")


@pytest.fixture(scope="module")
def exports(served_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The student's export in every variant: float32 made by the rule, the others by its stage in this process."""
    made = {"float32": served_demo / layout.export("student", "float32", "demo")}
    results = served_demo / "results" / "demo"
    inputs = {
        "model": results / "student" / "trainable.safetensors",
        "config": results / "student" / "config.json",
        "item_embeddings": served_demo / layout.item_embeddings("demo"),
        "backbone": results / "backbone",
        "item_ids": results / "data" / "items.parquet",
    }
    root = tmp_path_factory.mktemp("exports")
    for variant in layout.EXPORT_VARIANTS[1:]:
        made[variant] = root / variant
        params = {"target": "student", "variant": variant}
        call = StageCall("export", {k: str(v) for k, v in inputs.items()}, {"directory": str(made[variant])}, params)
        export_stage.run(call)
    return made


def moved(export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of an export, away from the run, in a working directory with no results/ (where the run's relative
    paths would lead)."""
    copy = tmp_path / "elsewhere" / export.name
    shutil.copytree(export, copy)
    monkeypatch.chdir(tmp_path)
    return copy


def test_an_export_loads_alone_and_gives_the_pipelines_top_k(served_demo, exports, tmp_path, monkeypatch):
    """Loaded from a copy with nothing else around, the float32 export (LoRA merged, embeddings cut to the prompt's
    rows) recommends every user the very items the `recommend` rule wrote for the trained student, at its scores."""
    known, users = known_users(served_demo)
    export = load_export(moved(exports["float32"], tmp_path, monkeypatch), precision="float32")
    top = export.recommend(known.histories, RECOMMEND_K, batch_size=16)
    ours = recommendations_frame(users.raw[known.ids[top.rows]], top, export.items)
    pipeline = pl.read_parquet(served_demo / layout.recommendations("student", "demo"))
    assert ours.select("user", "rank", "item").equals(pipeline.select("user", "rank", "item"))
    assert torch.allclose(ours["score"].to_torch(), pipeline["score"].to_torch(), rtol=1e-5, atol=1e-5)


def test_the_export_holds_the_kept_layers_merged_and_only_the_prompts_embedding_rows(served_demo):
    directory = served_demo / layout.export("student", "float32", "demo")
    files = {path.name for path in directory.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", layout.MANIFEST, "items.parquet"} <= files
    assert {layout.EXPORT_FILES["recommender"], layout.EXPORT_FILES["settings"]} <= files
    weights = load_file(directory / "model.safetensors")
    assert not [name for name in weights if "lora" in name]
    recommender = load_file(directory / layout.EXPORT_FILES["recommender"])
    rows = recommender["token_rows"]
    assert rows.tolist() == sorted(set(recommender["prompt_ids"].tolist()) | set(recommender["suffix_ids"].tolist()))
    config = AutoConfig.from_pretrained(directory)
    assert config.num_hidden_layers == 2 and config.vocab_size == len(rows)  # the student's layers, the prompt's rows
    assert weights["embed_tokens.weight"].shape[0] == len(rows)
    # The tokenizer gives the stored token ids from the prompt's text.
    settings = json.loads((directory / layout.EXPORT_FILES["settings"]).read_text())
    tokenizer = AutoTokenizer.from_pretrained(directory)
    prefix = tokenizer(settings["model"]["prompt_prefix"], add_special_tokens=False)["input_ids"]
    assert prefix == recommender["prompt_ids"].tolist()
    assert settings["variant"] == "float32" and settings["exported_from"] == {"dataset": "demo", "target": "student"}
    assert (settings["model"]["backbone"], settings["model"]["dtype"]) == (".", "float32")  # itself, not the run's
    assert json.loads((directory / layout.MANIFEST).read_text())["stage"] == "export"
    items = pl.read_parquet(directory / "items.parquet")
    assert items.equals(pl.read_parquet(served_demo / layout.data_file("item_ids", "demo")))


def export_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir() if path.name != layout.MANIFEST)


def test_quantized_variants_load_and_run(served_demo, exports, tmp_path, monkeypatch):
    """bf16, int8 and 4-bit exports load alone and recommend k known items to every user, from smaller files (how
    close they come to float32 is measured by benchmarks/recommend.py, not asserted)."""
    known, _ = known_users(served_demo)
    sizes = {}
    for variant in layout.EXPORT_VARIANTS:
        export = load_export(moved(exports[variant], tmp_path, monkeypatch), precision="float32")
        assert export.variant == variant
        stored = json.loads((export.directory / layout.EXPORT_FILES["settings"]).read_text())["model"]
        assert stored["dtype"] == ("bfloat16" if variant == "bf16" else "float32"), variant
        top = export.recommend(known.histories, 10)
        assert top.items.shape == (len(known.ids), 10) and bool(torch.isfinite(top.scores).all()), variant
        assert 1 <= int(top.items.min()) and int(top.items.max()) <= len(export.items), variant
        sizes[variant] = export_bytes(export.directory)
        assert all(path.is_file() for path in exports[variant].iterdir()), variant  # no scratch left inside
    assert not [p.name for p in exports["4bit"].parent.iterdir() if p.name.startswith("tmp")]  # nor beside it
    assert sizes["int8"] < sizes["bf16"] < sizes["float32"] and sizes["4bit"] < sizes["float32"], sizes
    with pytest.raises(ValueError, match="an int8 export computes in float32 on the CPU"):
        load_export(exports["int8"], precision="bf16")


def test_a_model_trained_on_a_quantized_backbone_is_not_exported(served_demo, tmp_path):
    results = served_demo / "results" / "demo"
    items = IdMap.read(results / "data" / layout.DATA_FILES["item_ids"], "item")
    table = load_item_embeddings(served_demo / layout.item_embeddings("demo"), len(items))
    model = load_llmrec(results / "student", table, backbone=results / "backbone")
    model.config.quantization = "4bit"
    with pytest.raises(ConfigError, match="trained on a 4bit backbone"):
        export_llmrec(model, results / "backbone", results / "data" / "items.parquet", tmp_path, "float32", {})
