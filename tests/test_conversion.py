"""GGUF backbones and random-init controls: converted once into a checkpoint the LLM stages load as usual."""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers_gguf import tiny_llama, write_tiny_gguf
from transformers import AutoModel, AutoModelForCausalLM

from slmrec.errors import BackboneError
from slmrec.models.conversion import convert
from slmrec.models.llmrec import load_backbone
from slmrec.models.presets import preset_gguf

PROMPTS = ["the user bought a red kettle", "hello world"]


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A tiny LLaMA saved directly (the reference) and the same model written as GGUF."""
    root = tmp_path_factory.mktemp("gguf")
    model, tokenizer = tiny_llama(seed=0)
    model.save_pretrained(root / "direct")
    tokenizer.save_pretrained(root / "direct")
    return {"root": root, "direct": root / "direct", "gguf": write_tiny_gguf(model, tokenizer, root / "tiny.gguf")}


def last_hidden(directory, layers: int, prompts=PROMPTS) -> torch.Tensor:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = load_backbone(directory, layers, "float32", "none").eval()
    ids = tokenizer(prompts[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state


def test_gguf_converts_and_loads_truncated_like_the_model_saved_directly(original, tmp_path):
    convert(original["gguf"], tmp_path / "converted", "pretrained", seed=0)
    assert (tmp_path / "converted" / "config.json").is_file()
    for layers in (2, 4):
        expected = last_hidden(original["direct"], layers)
        assert torch.allclose(last_hidden(tmp_path / "converted", layers), expected, atol=1e-5), layers
    assert AutoModel.from_pretrained(tmp_path / "converted").config.num_hidden_layers == 4


def test_random_init_keeps_the_architecture_and_is_seeded(original, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        convert(original["gguf"], tmp_path / name, "random", seed=seed)
    weights = {
        name: AutoModelForCausalLM.from_pretrained(tmp_path / name).model.layers[0].mlp.up_proj.weight for name in "abc"
    }
    pretrained = AutoModelForCausalLM.from_pretrained(original["direct"]).model.layers[0].mlp.up_proj.weight
    assert torch.equal(weights["a"], weights["b"])  # seeded
    assert not torch.equal(weights["a"], weights["c"])
    assert not torch.allclose(weights["a"], pretrained)  # not the pretrained weights
    assert weights["a"].shape == pretrained.shape


def test_random_init_of_a_checkpoint_directory(original, tmp_path):
    convert(original["direct"], tmp_path / "random", "random", seed=3)
    assert not torch.allclose(last_hidden(tmp_path / "random", 2), last_hidden(original["direct"], 2))


def test_gguf_without_the_gguf_package_names_the_extra(original, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(BackboneError, match=r"pip install 'slmrec\[gguf\]'"):
        convert(original["gguf"], tmp_path / "out", "pretrained", seed=0)
    assert not (tmp_path / "out").exists()


def write_unreadable_architecture(path):
    """A well-formed GGUF of an architecture (RWKV-6) that transformers does not convert."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(path, "rwkv6")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


BAD_GGUFS = {
    "truncated": (
        lambda path, good: path.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
        "looks truncated or damaged (ValueError: cannot reshape array",
    ),
    "text": (
        lambda path, good: path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 9\n"),
        "is not a GGUF file: it starts with b'version https://git-lfs.github.com/spec/', not b'GGUF'",
    ),
    "unreadable architecture": (
        lambda path, good: write_unreadable_architecture(path),
        "is a GGUF file transformers cannot read (GGUF model with architecture rwkv6 is not supported yet.)",
    ),
}


@pytest.mark.parametrize("case", BAD_GGUFS)
def test_a_bad_gguf_is_one_line_naming_the_key_the_file_and_the_cause(original, tmp_path, case):
    write, cause = BAD_GGUFS[case]
    path = tmp_path / "model.gguf"
    write(path, original["gguf"])
    with pytest.raises(BackboneError) as err:
        convert(path, tmp_path / "out", "pretrained", seed=0)
    assert str(err.value).startswith(f"backbone.path: {path} {cause}")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_missing_preset_wheel_says_how_to_install_it(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(BackboneError, match="make smollm2"):
        preset_gguf("smollm2-135m")


@pytest.mark.e2e
def test_the_workflow_converts_a_gguf_once_for_every_dataset(original, tmp_path):
    from conftest import copy_workflow, run_snakemake, write_tiny_config

    from slmrec.io import sha256_file

    workdir = copy_workflow(tmp_path)
    gguf = str(original["gguf"])
    other = {"source": {"kind": "synthetic", "users": 300, "items": 300, "seed": 8}, "backbone": {"path": gguf}}
    write_tiny_config(workdir, {"datasets": {"demo": {"backbone": {"path": gguf}}, "other": other}})
    targets = ["results/demo/teacher/metrics.json", "results/other/teacher/metrics.json"]
    dry = run_snakemake(workdir, *targets, "--configfile", "tiny.yaml", "--dry-run")
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", dry.stdout[dry.stdout.index("Job stats:") :], flags=re.M))
    assert jobs["convert_backbone"] == "1" and "backbone" not in jobs and jobs["teacher"] == "2"

    run_snakemake(workdir, "results/backbones/tiny", "--configfile", "tiny.yaml")
    converted = workdir / "results" / "backbones" / "tiny"
    manifest = json.loads((converted / "manifest.json").read_text())
    assert manifest["stage"] == "convert_backbone" and manifest["inputs"] == {gguf: sha256_file(gguf)}
    assert manifest["config"] == {"init": "pretrained", "seed": 0}
    assert torch.allclose(last_hidden(converted, 2), last_hidden(original["direct"], 2), atol=1e-5)
