"""The E4SRec-style LLM recommender used as teacher (l layers) and as distilled student (m layers).

A decoder-only LM reads `[prompt tokens][user's items][response suffix]`. Items enter as the frozen
SASRec item table passed through a trainable linear layer (d -> hidden); the final-norm hidden state
at the last position, through a second linear layer (hidden -> d), is the user vector, and an item's
score is its dot product with the same SASRec table. Only LoRA adapters on the backbone and the two
projections train.

Rows read `[prompt][pad][items][suffix]`: padding is masked out and position ids count real tokens
only, so a user's vector does not depend on how much padding its batch needed. The prompt is then the
same in every row, so by default it runs once per batch (once per evaluation at inference) and the
batch reuses its keys and values.

The whole forward runs in the model's compute precision (`backbone.precision`, `slmrec.precision`): bf16
autocast where the device has native bf16, else float32. The user vector and the scores are float32.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, BitsAndBytesConfig, DynamicCache, PreTrainedModel

from slmrec import layout
from slmrec.errors import ArtifactError, BackboneError
from slmrec.io import atomic_path, read_artifact, read_json, write_json
from slmrec.models.presets import check_backbone
from slmrec.precision import autocast, resolve

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoraSettings:
    r: int
    alpha: int
    dropout: float
    target_modules: list[str]


@dataclass
class LLMRecConfig:
    """Everything needed to rebuild a trained model around its saved trainable weights."""

    backbone: str
    layers: int
    item_dim: int
    num_items: int
    dtype: str
    quantization: str
    lora: LoraSettings
    prompt_prefix: str
    prompt_suffix: str
    gradient_checkpointing: bool
    max_len: int  # the history length it was trained with, and is scored with
    precision: str = "float32"  # backbone.precision; a model saved before that setting computed in float32

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LLMRecConfig:
        missing = [f.name for f in fields(cls) if f.name not in data and f.default is MISSING]
        if missing:
            raise ArtifactError(
                f"a saved model's config lacks {missing}: it predates them; rerun the stage that made it"
            )
        return cls(**{**data, "lora": LoraSettings(**data["lora"])})

    @classmethod
    def from_settings(
        cls,
        backbone_dir: str,
        backbone: dict[str, Any],
        prompt: dict[str, str],
        training: dict[str, Any],
        layers: int,
        item_table: Tensor,
    ) -> LLMRecConfig:
        """The config a stage builds from its sections: `backbone` (dtype, quantization), `prompt`, and
        its training section (LoRA, gradient checkpointing)."""
        return cls(
            backbone=str(backbone_dir),
            layers=layers,
            item_dim=item_table.shape[1],
            num_items=item_table.shape[0] - 1,
            dtype=backbone["dtype"],
            quantization=backbone["quantization"],
            lora=LoraSettings(**training["lora"]),
            prompt_prefix=prompt["prefix"],
            prompt_suffix=prompt["suffix"],
            gradient_checkpointing=training["gradient_checkpointing"],
            max_len=training["max_len"],
            precision=backbone["precision"],
        )


def load_backbone(
    path: str | Path, layers: int, dtype: str, quantization: str, device: str | None = None
) -> PreTrainedModel:
    """Load only the first `layers` decoder layers of a local checkpoint (the rest never reach memory)."""
    path = Path(path)
    check_backbone(path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    available = config.num_hidden_layers
    if not 1 <= layers <= available:
        raise BackboneError(f"layers = {layers}, but the backbone at {path} has {available} decoder layers")
    keep_layers(config, layers)
    options: dict[str, Any] = {
        "config": config,
        "dtype": DTYPES[dtype],
        "trust_remote_code": False,
        "output_loading_info": True,
    }
    if quantization != "none":
        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=quantization == "4bit",
            load_in_8bit=quantization == "8bit",
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=DTYPES[dtype],
            bnb_4bit_use_double_quant=True,
        )
        options["device_map"] = {"": device or ("cuda" if torch.cuda.is_available() else "cpu")}
    try:
        with _without_load_report():
            model, loading = AutoModel.from_pretrained(path, **options)
    except (ImportError, RuntimeError, ValueError) as err:
        if quantization == "none":
            raise
        raise BackboneError(
            f"loading {path} with backbone.quantization = {quantization!r} failed through bitsandbytes ({err}); "
            "set backbone.quantization: none (and backbone.dtype: bfloat16 to save memory), "
            "or install a bitsandbytes build for this machine"
        ) from err
    logger.info(
        "backbone %s: kept the first %d of %d layers (%d skipped), %s, quantization %s",
        path,
        layers,
        available,
        available - layers,
        dtype,
        quantization,
    )
    if loading["missing_keys"]:
        missing = sorted(loading["missing_keys"])
        logger.warning("backbone %s lacks %d weights, left at random: %s", path, len(missing), ", ".join(missing[:5]))
    return model


def keep_layers(config: Any, layers: int) -> None:
    """Cut a decoder's config to its first `layers` layers. A family that mixes attention kinds per layer (Gemma 3:
    five sliding-window layers, then a global one) lists them in `layer_types`, cut to match: the decoder, its
    masks and its cache read the kind of layer i there."""
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = config.layer_types[:layers]


def _not_a_load_report(record: logging.LogRecord) -> bool:
    """False for the records of transformers' per-weight load report (its function's name; a test notices a
    rename)."""
    return record.funcName != "log_state_dict_report"


@contextmanager
def _without_load_report() -> Iterator[None]:
    """Keep transformers from logging its table of the checkpoint weights it did not load: for a truncated backbone,
    every weight of the skipped layers, once per stage. `load_backbone` says how many layers it kept in one line.

    A filter, not a higher level: at level ERROR transformers runs (and logs) a tensor-parallel check instead.
    """
    report = logging.getLogger("transformers.modeling_utils")
    report.addFilter(_not_a_load_report)
    try:
        yield
    finally:
        report.removeFilter(_not_a_load_report)


def add_lora(backbone: PreTrainedModel, settings: LoraSettings, gradient_checkpointing: bool) -> nn.Module:
    """Freeze the backbone and attach LoRA adapters (QLoRA when the backbone is quantized)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(backbone, "is_quantized", False):
        backbone = prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
    )
    return get_peft_model(backbone, lora)


class LLMRec(nn.Module):
    # Buffers: the frozen item table [items + 1, d] and the prompt's token ids around the items.
    item_table: Tensor
    prompt_ids: Tensor
    suffix_ids: Tensor
    # The truncated decoder with LoRA (a peft model around a transformers one): typed by neither library.
    backbone: Any

    def __init__(
        self, config: LLMRecConfig, backbone: nn.Module, item_table: Tensor, prompt_ids: Tensor, suffix_ids: Tensor
    ) -> None:
        super().__init__()
        if item_table.shape != (config.num_items + 1, config.item_dim):
            raise ValueError(
                f"item table has shape {tuple(item_table.shape)}, expected ({config.num_items + 1}, {config.item_dim})"
            )
        self.config = config
        self.backbone = backbone
        hidden = self.backbone.config.hidden_size
        self.register_buffer("item_table", item_table.detach().float().clone(), persistent=False)
        self.register_buffer("prompt_ids", prompt_ids.long(), persistent=False)
        self.register_buffer("suffix_ids", suffix_ids.long(), persistent=False)
        self.input_proj = nn.Linear(config.item_dim, hidden)
        self.output_proj = nn.Linear(hidden, config.item_dim)
        # Run the shared prompt once per batch and reuse its keys and values (same scores, fewer tokens).
        self.prompt_cache = True
        self._frozen_prompt: list[tuple[Tensor, Tensor]] | None = None

    @property
    def num_layers(self) -> int:
        return self.config.layers

    @property
    def precision(self) -> str:
        """How this model computes where it lies: `bf16` (autocast) or `float32` (`backbone.precision` resolved)."""
        return resolve(self.config.precision, self.item_table.device.type)

    def _inputs(self, items: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Embeddings of `[items][suffix]`, with the attention mask and position ids of the whole
        `[prompt][pad][items][suffix]` row, for a batch of left-padded item ids [B, L].

        The padding sits between prompt and items and is masked out, and positions count only real
        tokens, so a user's vector does not depend on how much padding its batch needed, and the
        prompt is the same tokens at the same positions in every row: what makes it cacheable.
        """
        # Drop the columns that are padding in every row: [B, L] -> [B, L'] (L' = longest history).
        items = items[:, (items > 0).any(0).nonzero().min() :] if (items > 0).any() else items[:, -1:]
        batch = items.shape[0]
        embed = self.backbone.get_input_embeddings()
        dtype = embed.weight.dtype
        suffix = embed(self.suffix_ids).to(dtype).expand(batch, -1, -1)  # [B, S, H]
        item_vectors = self.input_proj(self.item_table[items]).to(dtype)  # [B, L', d] -> [B, L', H]
        rest = torch.cat([item_vectors, suffix], dim=1)  # [B, L' + S, H]
        real = torch.cat([items > 0, torch.ones_like(items[:, :1], dtype=torch.bool).expand(-1, suffix.shape[1])], 1)
        prompt = torch.ones(batch, len(self.prompt_ids), dtype=torch.long, device=items.device)  # [B, P]
        mask = torch.cat([prompt, real.long()], dim=1)  # [B, P + L' + S]: 0 on pads
        positions = (mask.cumsum(1) - 1).clamp(min=0)  # [B, P + L' + S]: counts real tokens only
        return rest, mask, positions

    def _prompt_states(self) -> list[tuple[Tensor, Tensor]]:
        """Every layer's keys and values of the prompt ([1, heads, P, head_dim] each), run once for a batch.

        In training they depend on the LoRA weights and carry gradients; in evaluation (no gradients,
        eval mode) they are kept until the model next changes mode, i.e. computed once per evaluation.
        """
        if self.training or torch.is_grad_enabled() or self._frozen_prompt is None:
            prompt = self.backbone.get_input_embeddings()(self.prompt_ids)[None]  # [1, P, H]
            positions = torch.arange(len(self.prompt_ids), device=prompt.device)[None]  # [1, P]
            # A plain cache keeps every prompt token in every layer: a family's own cache would keep only the last
            # window of a sliding-window layer (Gemma 3), and the layers would disagree on how long the prompt is.
            # The masks do the windowing, over the whole row.
            out = self.backbone(inputs_embeds=prompt, position_ids=positions, use_cache=True, cache=DynamicCache())
            states = [(keys, values) for keys, values, *_ in out.cache]
            if self.training or torch.is_grad_enabled():
                return states
            self._frozen_prompt = states
        return self._frozen_prompt

    def train(self, mode: bool = True) -> LLMRec:
        self._frozen_prompt = None  # weights may change in the new mode (or did, in the old one)
        return super().train(mode)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._frozen_prompt = None  # new weights (a checkpoint, the best model): the kept prompt is stale
        super()._load_from_state_dict(*args, **kwargs)

    @contextmanager
    def truncated(self, layers: int) -> Iterator[LLMRec]:
        """This model read out after its first `layers` decoder layers, through its final norm and output
        projection, with nothing trained for that depth: the paper's "direct inference" (Figure 2)."""
        if not 1 <= layers <= self.num_layers:
            raise ValueError(f"direct inference needs 1 <= layers <= {self.num_layers}, got {layers}")
        base = self.backbone.get_base_model().config
        kinds = getattr(base, "layer_types", None)
        self._frozen_prompt = None
        keep_layers(base, layers)  # the decoder runs self.layers[: num_hidden_layers], then its norm
        try:
            yield self
        finally:
            base.num_hidden_layers = self.num_layers
            if kinds is not None:
                base.layer_types = kinds
            self._frozen_prompt = None

    def speedups(self) -> list[str]:
        """The optimised paths this model's training and inference times were measured on (for the report)."""
        if not self.prompt_cache:
            return ["length-bucketed inference"]
        where = " (inference only: gradient checkpointing)" if self.config.gradient_checkpointing else ""
        return [f"shared-prompt KV cache{where}", "length-bucketed inference"]

    def _uses_prompt_cache(self) -> bool:
        # Under gradient checkpointing, transformers drops any cache while training: run the full prompt.
        checkpointed = self.training and torch.is_grad_enabled() and self.config.gradient_checkpointing
        return self.prompt_cache and not checkpointed

    def forward(
        self, input_ids: Tensor, labels: Tensor | None = None, output_layer_states: bool = False
    ) -> dict[str, Any]:
        """`input_ids` are left-padded item ids [B, L]; `labels` the next item [B].

        Returns the user vectors, with `labels` the scores and the CE loss, and, with `output_layer_states`, the
        last-position hidden state after every decoder layer ([B, layers, hidden]; the last one final-normed),
        which distillation aligns.
        """
        with autocast(self.precision, input_ids.device.type):
            return self._forward(input_ids, labels, output_layer_states)

    def _forward(self, input_ids: Tensor, labels: Tensor | None, output_layer_states: bool) -> dict[str, Any]:
        rest, mask, positions = self._inputs(input_ids)
        n_prompt, batch = len(self.prompt_ids), rest.shape[0]
        if self._uses_prompt_cache():
            # The prompt's keys and values, shared by the batch: [1, heads, P, hd] -> [B, heads, P, hd] (a view).
            shared = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in self._prompt_states()]
            inputs = {"inputs_embeds": rest, "position_ids": positions[:, n_prompt:], "cache": DynamicCache(shared)}
        else:
            prompt = self.backbone.get_input_embeddings()(self.prompt_ids).to(rest.dtype)  # [P, H]
            sequence = torch.cat([prompt.expand(batch, -1, -1), rest], dim=1)  # [B, P + L' + S, H]
            inputs = {"inputs_embeds": sequence, "position_ids": positions, "use_cache": False}
        out = self.backbone(attention_mask=mask, output_hidden_states=output_layer_states, **inputs)
        last = out.last_hidden_state[:, -1].float()
        user = self.output_proj(last).float()
        result: dict[str, Any] = {"user": user, "last_hidden": last}
        if output_layer_states:
            result["layer_states"] = torch.stack([h[:, -1].float() for h in out.hidden_states[1:]], dim=1)
        if labels is not None:
            result["logits"] = self.scores(user)  # [B, items + 1]
            result["loss"] = F.cross_entropy(result["logits"], labels)
        return result

    def scores(self, user: Tensor) -> Tensor:
        with torch.autocast(user.device.type, enabled=False):  # float32 whatever the precision: no bf16 ties
            logits = user.float() @ self.item_table.T  # [B, d] x [d, items + 1]
        logits[:, 0] = float("-inf")
        return logits

    def user_vectors(self, items: Tensor) -> Tensor:
        return self.forward(items)["user"]

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Only what training changes (LoRA and projections): small enough to checkpoint often."""
        names = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if k in names}

    def parameter_counts(self) -> dict[str, int]:
        """Total, trainable and at-inference counts (LoRA merges into the base weights, so it adds nothing)."""
        counts = count_parameters(self)
        lora = sum(p.numel() for name, p in self.named_parameters() if "lora_" in name)
        return {**counts, "inference": counts["total"] - lora}

    def save_artifacts(self, output: dict[str, str]) -> None:
        """`model` (the trainable weights) and `config` (how to rebuild the rest); the backbone is referenced."""
        with atomic_path(output["model"]) as tmp:
            save_file(self.trainable_state_dict(), str(tmp))
        write_json(output["config"], asdict(self.config))


def _numel(parameter: Tensor) -> int:
    """Logical size: a 4-bit weight is stored packed (two values a byte) with its real shape on the side."""
    quant_state = getattr(parameter, "quant_state", None)
    return math.prod(quant_state.shape) if quant_state is not None else parameter.numel()


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(_numel(p) for p in model.parameters())
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def tokenize_prompt(tokenizer: Any, prefix: str, suffix: str) -> tuple[Tensor, Tensor]:
    """The prompt's and the response suffix's token ids, both without BOS, as the authors' code tokenizes."""
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    suffix_ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    return torch.tensor(prefix_ids), torch.tensor(suffix_ids)


def build_llmrec(config: LLMRecConfig, item_table: Tensor, seed: int | None = None) -> LLMRec:
    """Load the truncated backbone, attach LoRA and fresh projections."""
    if seed is not None:
        torch.manual_seed(seed)
    decoder = load_backbone(config.backbone, config.layers, config.dtype, config.quantization)
    tokenizer = AutoTokenizer.from_pretrained(config.backbone, trust_remote_code=False)
    prompt_ids, suffix_ids = tokenize_prompt(tokenizer, config.prompt_prefix, config.prompt_suffix)
    backbone = add_lora(decoder, config.lora, config.gradient_checkpointing)
    model = LLMRec(config, backbone, item_table, prompt_ids, suffix_ids)
    return model.to(next(backbone.parameters()).device)


def load_llmrec(
    directory: str | Path, item_table: Tensor, backbone: str | Path | None = None, **overrides: Any
) -> LLMRec:
    """Rebuild a saved model (`layout.LLM_FILES` of `directory`): the backbone, then its trained weights.

    `backbone` is the checkpoint to build on: a stage passes its rule's `backbone` input, so that it reads what
    Snakemake knows it reads, wherever `results/` lies; by default the path recorded when the model was trained.
    `overrides` change how the backbone is loaded (e.g. `quantization="4bit"` for a frozen teacher).
    """
    directory = Path(directory)
    saved = read_artifact(directory / layout.LLM_FILES["config"], read_json)
    located = {"backbone": str(backbone)} if backbone is not None else {}
    config = LLMRecConfig.from_dict({**saved, **located, **overrides})
    model = build_llmrec(config, item_table)
    state = read_artifact(str(directory / layout.LLM_FILES["model"]), load_file)
    missing = set(model.trainable_state_dict()) - set(state)
    unexpected = set(state) - set(model.trainable_state_dict())
    if missing or unexpected:
        raise ValueError(
            f"{directory}: saved weights do not fit the model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )
    model.load_state_dict(state, strict=False)
    return model
