"""A trained LLM recommender as one self-contained directory, and the one function that loads it.

`export_llmrec` writes what scoring needs and nothing more (`layout.EXPORT_FILES`):
- the kept decoder layers with LoRA merged into their weights (peft's `merge_and_unload`), a Hugging Face
  checkpoint whose embedding table holds only the rows of the prompt's tokens: items enter through the input
  projection, never as tokens, and on SmolLM2 the full table is most of the weights;
- the SASRec item table and both projections, the prompt's token ids (and which rows of the vocabulary the kept
  embedding rows are), the model's settings, the tokenizer (it gives those token ids from the prompt's text) and the
  item id map.

`load_export` rebuilds an `LLMRec` from that directory alone: no backbone checkpoint, training config or results/.

The variants (`layout.EXPORT_VARIANTS`) store the decoder's weights in different ways; the item table, the
projections and the scores stay float32 in all of them:
- `float32`, `bf16`: the merged weights in that dtype (bf16 weights compute in bf16);
- `int8`: int8 weights, one scale per output row, run by torch's dynamic quantization on the CPU, which also rounds
  each linear layer's input to int8 on the fly (one scale per tensor); the rest computes in float32;
- `4bit`: NF4 with double quantization through bitsandbytes (its CPU backend too), computing in float32.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, BitsAndBytesConfig, PreTrainedModel

from slmrec import layout
from slmrec.errors import ArtifactError, ConfigError
from slmrec.evaluate import history_batches
from slmrec.io import read_artifact, read_json, write_json
from slmrec.models.llmrec import LLMRec, LLMRecConfig
from slmrec.precision import resolve
from slmrec.recommend import IdMap, TopK, top_k

FLOAT_VARIANTS = {"float32": torch.float32, "bf16": torch.bfloat16}  # the variants that store plain weights
PROJECTIONS = ("input_proj", "output_proj")


def nf4_config() -> BitsAndBytesConfig:
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )


def export_llmrec(
    model: LLMRec,
    tokenizer_dir: str | Path,
    item_ids: str | Path,
    directory: Path,
    variant: str,
    source: dict[str, Any],
) -> None:
    """Write `model` to the empty `directory` as `variant`; `source` (what it was exported from) is recorded.

    The model's backbone is merged in place: use the model no more."""
    if variant not in layout.EXPORT_VARIANTS:
        raise ValueError(f"unknown export variant {variant!r}; expected one of {', '.join(layout.EXPORT_VARIANTS)}")
    if model.config.quantization != "none":
        raise ConfigError(
            f"cannot export a model trained on a {model.config.quantization} backbone (backbone.quantization): its "
            "LoRA cannot be merged into the quantized weights without rounding them a second time; export a model "
            "trained with backbone.quantization: none"
        )
    decoder = model.backbone.merge_and_unload()  # W + B·A·(alpha / r) in every adapted layer
    rows = torch.unique(torch.cat([model.prompt_ids, model.suffix_ids]))  # sorted token ids of the prompt
    keep_embedding_rows(decoder, rows)
    if variant == "int8":
        save_int8(decoder, directory)
    elif variant == "4bit":
        # Quantized as it loads. The merged copy sits inside the output's own temporary directory, so a killed
        # export leaves nothing that atomic_dir's cleanup does not remove.
        with tempfile.TemporaryDirectory(dir=directory) as merged:
            decoder.save_pretrained(merged)
            AutoModel.from_pretrained(merged, quantization_config=nf4_config(), device_map={"": "cpu"}).save_pretrained(
                directory
            )
    else:
        decoder.to(FLOAT_VARIANTS[variant]).save_pretrained(directory)
    AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False).save_pretrained(directory)
    tensors = {
        "item_table": model.item_table,
        "prompt_ids": model.prompt_ids,
        "suffix_ids": model.suffix_ids,
        "token_rows": rows,
        **{f"{name}.{key}": value for name in PROJECTIONS for key, value in getattr(model, name).state_dict().items()},
    }
    save_file(
        {key: value.detach().cpu().contiguous() for key, value in tensors.items()}, str(directory / file("recommender"))
    )
    # As the export holds it: its own directory is the backbone, in the variant's dtype (int8 and 4-bit keep their
    # other weights float32); int8 runs float32 activations (torch's quantized kernels take no bf16) wherever it runs.
    settings = {
        **asdict(model.config),
        "backbone": ".",
        "dtype": "bfloat16" if variant == "bf16" else "float32",
        "precision": "float32" if variant == "int8" else model.config.precision,
    }
    write_json(directory / file("settings"), {"variant": variant, "model": settings, "exported_from": source})
    shutil.copyfile(item_ids, directory / file("items"))


def file(name: str) -> str:
    return layout.EXPORT_FILES[name]


def keep_embedding_rows(decoder: PreTrainedModel, rows: Tensor) -> None:
    """Cut the decoder's token embeddings to `rows` (token ids, sorted): row i of the cut table is token rows[i]."""
    embed = cast(nn.Embedding, decoder.get_input_embeddings())
    embed.weight = nn.Parameter(embed.weight.detach()[rows].clone())  # [vocab, H] -> [len(rows), H]
    embed.num_embeddings, embed.padding_idx = len(rows), None
    decoder.config.vocab_size = len(rows)
    decoder.config.pad_token_id = None  # the pad token may be no kept row; nothing pads tokens here


def linear_names(module: nn.Module) -> list[str]:
    return [name for name, child in module.named_modules() if isinstance(child, nn.Linear)]


@contextlib.contextmanager
def eager_quantization() -> Iterator[None]:
    """Without torch's notices that its eager quantization (and qint8 tensors) will give way to torchao: it is what
    torch has built in, and the int8 variant is its dynamic quantization."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        yield


def quantized_int8(decoder: nn.Module) -> nn.Module:
    """A copy of `decoder` whose linear layers are torch's dynamically quantized ones (CPU): int8 weights with one
    scale per output row, inputs rounded to int8 as they come."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with eager_quantization():
        return quantize_dynamic(decoder, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def save_int8(decoder: PreTrainedModel, directory: Path) -> None:
    """The decoder's config, and its weights: each linear layer's int8 weight [out, in] and float64 scales [out]
    (symmetric: no zero points), everything else float32."""
    quantized = quantized_int8(decoder)
    linear = linear_names(decoder)
    tensors = {
        key: value
        for key, value in decoder.state_dict().items()
        if key.rpartition(".")[0] not in linear  # the float weights and biases the int8 layers replace
    }
    for name in linear:
        layer: Any = quantized.get_submodule(name)  # a DynamicQuantizedLinear: its weight and bias are methods
        weight, bias = layer.weight(), layer.bias()
        tensors[f"{name}.weight"] = weight.int_repr()
        tensors[f"{name}.weight_scale"] = weight.q_per_channel_scales()
        if bias is not None:
            tensors[f"{name}.bias"] = bias
    decoder.config.save_pretrained(directory)
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(directory / file("int8")))


def load_int8(directory: Path) -> nn.Module:
    """`save_int8`'s decoder: built from its config, its float tensors loaded, then quantized, and each linear layer
    given its stored int8 weight (the random weights it was built with are never used)."""
    decoder = AutoModel.from_config(AutoConfig.from_pretrained(directory, trust_remote_code=False))
    tensors = read_artifact(str(directory / file("int8")), load_file)
    linear = linear_names(decoder)
    floats = {key: value for key, value in tensors.items() if key.rpartition(".")[0] not in linear}
    missing, unexpected = decoder.load_state_dict(floats, strict=False)
    if unexpected or any(key.rpartition(".")[0] not in linear for key in missing):
        raise ArtifactError(f"{directory}: the int8 weights do not fit the decoder's config ({unexpected or missing})")
    quantized = quantized_int8(decoder.float())
    for name in linear:
        scales = tensors[f"{name}.weight_scale"]  # [out], float64
        dequantized = (tensors[f"{name}.weight"].double() * scales[:, None]).float()  # exact: |int8| <= 127
        with eager_quantization():
            weight = torch.quantize_per_channel(
                dequantized, scales, torch.zeros_like(scales, dtype=torch.long), 0, torch.qint8
            )
        layer: Any = quantized.get_submodule(name)
        layer.set_weight_bias(weight, tensors.get(f"{name}.bias"))
    return quantized


@dataclass
class Export:
    """A loaded export: the model, its item ids, the variant it stores and where it was loaded from."""

    model: LLMRec
    items: IdMap
    variant: str
    directory: Path

    def recommend(
        self,
        histories: list[list[int]],
        k: int,
        exclude_history: bool = True,
        batch_size: int = 256,
        progress: bool = True,
    ) -> TopK:
        """The `k` best items for each history (internal item ids, oldest first), one row each in their order, as the
        `recommend` rules pick them."""
        max_len = self.model.config.max_len
        batches = history_batches(histories, max_len, batch_size)
        device = self.model.item_table.device
        found = top_k(
            self.model.user_vectors,
            self.model.item_table,
            histories,
            batches,
            k,
            max_len,
            exclude_history=exclude_history,
            device=device,
            progress=progress,
        )
        order = np.argsort(found.rows)  # back from length order to the histories' own
        return TopK(found.rows[order], found.items[order], found.scores[order])


def load_export(directory: str | Path, precision: str | None = None, device: str | None = None) -> Export:
    """The model of an export directory, in eval mode, computing in `precision` (else as it was trained: `auto` is
    decided by the device) on `device` (else a GPU where there is one; int8 runs on the CPU alone)."""
    directory = Path(directory)
    if not (directory / file("settings")).is_file():
        raise ArtifactError(
            f"{directory} is not an export (it has no {file('settings')}); make one with: snakemake --cores 1 "
            "results/<dataset>/export/<target>/<variant>"
        )
    saved = read_artifact(directory / file("settings"), read_json)
    variant: str = saved["variant"]
    device = device or ("cuda" if torch.cuda.is_available() and variant != "int8" else "cpu")
    config = LLMRecConfig.from_dict(
        {**saved["model"], "backbone": str(directory), "precision": precision or saved["model"]["precision"]}
    )
    if variant == "int8" and (device != "cpu" or resolve(config.precision, device) != "float32"):
        raise ValueError(f"{directory}: an int8 export computes in float32 on the CPU (torch's dynamic quantization)")
    decoder = _load_decoder(directory, variant, device)
    tensors = read_artifact(str(directory / file("recommender")), load_file)
    rows = tensors["token_rows"]  # the token id of each kept embedding row, sorted
    prompt_ids = torch.searchsorted(rows, tensors["prompt_ids"])  # token ids -> rows of the cut table
    suffix_ids = torch.searchsorted(rows, tensors["suffix_ids"])
    model = LLMRec(config, decoder, tensors["item_table"], prompt_ids, suffix_ids)
    for name in PROJECTIONS:
        prefix = f"{name}."
        getattr(model, name).load_state_dict(
            {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        )
    items = IdMap.read(directory / file("items"), "item")
    if len(items) != config.num_items:
        raise ArtifactError(f"{directory}: {len(items)} item ids for a model of {config.num_items} items")
    return Export(model.to(device).eval(), items, variant, directory)


def _load_decoder(directory: Path, variant: str, device: str) -> Any:
    if variant == "int8":
        return load_int8(directory)
    options: dict[str, Any] = {"trust_remote_code": False}
    if variant == "4bit":
        options["device_map"] = {"": device}  # its config holds the quantization
    else:
        options["dtype"] = FLOAT_VARIANTS[variant]
    return AutoModel.from_pretrained(directory, **options)
