"""A miniature LLaMA and its tokenizer written as a GGUF file, for tests of the `gguf_file=` loading path.

No real GGUF checkpoint is small enough to ship with the tests, so we build one: a random
`LlamaForCausalLM`, a byte-level BPE trained on a few sentences, and a writer that lays both out the
way llama.cpp's `convert_hf_to_gguf.py` does, so `transformers` reads the file back unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import MODEL_ARCH, GGUFWriter, LlamaFileType, TokenType, get_tensor_name_map
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"

# Enough text for a few dozen merges; the tests only need a vocabulary with real multi-byte tokens.
CORPUS = (
    "the user bought a red kettle and then a blue teapot",
    "users who bought the kettle also bought the teapot and some tea",
    "a recommender reads the history and predicts the next item",
    "the next item is often a cheaper item from the same store",
    "hello world, this is a tiny llama reading a tiny gguf file",
)


def tiny_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GGUF's `gpt2` tokenizer model) with BOS/EOS, trained on `CORPUS`.

    Byte-level so that every string encodes, and with no post-processor: llama.cpp's `gpt2`
    vocabularies carry no template, and the GGUF reader rebuilds a plain `GPT2Tokenizer` backend.
    """
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN)


def tiny_llama(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A random 4-layer LLaMA (hidden 64, 4 heads, 2 KV heads) in float32, and its tokenizer.

    Grouped-query attention (fewer KV heads than heads) is on purpose: it is the case where the q/k
    row permutation differs between the two projections.
    """
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    return model, tokenizer


def permute_qk(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder q/k rows from HF's half-split rotary layout to llama.cpp's interleaved one.

    This is `LlamaModel.permute` from llama.cpp's converter, with `heads` the projection's own head
    count (query heads for q, KV heads for k). Transformers' GGUF loader undoes it, so writing the
    weights unpermuted would load without error and silently scramble the rotary embedding.
    """
    halves = weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
    return halves.swapaxes(1, 2).reshape(weight.shape)


def _gguf_tensors(model: LlamaForCausalLM) -> dict[str, np.ndarray]:
    """The model's weights under their GGUF names, as contiguous float32 arrays in (out, in) order.

    A tied `lm_head` is left out, as llama.cpp does: the loader infers `tie_word_embeddings` from
    whether `output.weight` is present.
    """
    config = model.config
    name_map = get_tensor_name_map(MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tensors: dict[str, np.ndarray] = {}
    for hf_name, param in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        stem, suffix = hf_name.rsplit(".", 1)
        gguf_stem = name_map.get_name(stem)
        if gguf_stem is None:
            raise ValueError(f"no GGUF name for {hf_name}")
        weight = param.detach().to(torch.float32).cpu().numpy()
        if gguf_stem.endswith(".attn_q"):
            weight = permute_qk(weight, config.num_attention_heads)
        elif gguf_stem.endswith(".attn_k"):
            weight = permute_qk(weight, config.num_key_value_heads)
        tensors[f"{gguf_stem}.{suffix}"] = np.ascontiguousarray(weight)
    return tensors


def _bpe_model(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """The backend's BPE model section (`vocab`, `merges`): its JSON form is the only public view of the merges."""
    return json.loads(tokenizer.backend_tokenizer.to_str())["model"]


def _add_tokenizer(writer: GGUFWriter, tokenizer: PreTrainedTokenizerFast) -> None:
    """Write the BPE vocabulary, merges and special ids under `tokenizer.ggml.*` (model `gpt2`)."""
    backend = _bpe_model(tokenizer)
    vocab: dict[str, int] = backend["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError("vocabulary ids must be contiguous from 0")
    special = set(tokenizer.all_special_tokens)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([TokenType.CONTROL if t in special else TokenType.NORMAL for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in backend["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    # Say so explicitly: the original adds no BOS/EOS, and a reader must not guess otherwise.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def write_tiny_gguf(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, path: Path) -> Path:
    """Write `model` and `tokenizer` to `path` as an all-F32 llama GGUF, and return `path`.

    Load it back with `from_pretrained(path.parent, gguf_file=path.name)`.
    """
    config = model.config
    if config.rope_parameters.get("rope_type", "default") != "default":
        raise ValueError("only the default rotary embedding is written; rope scaling keys are not")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    writer = GGUFWriter(path, "llama")
    writer.add_name("tiny-llama")  # transformers reads a llama file named "*mistral*" as Mistral
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_vocab_size(config.vocab_size)
    _add_tokenizer(writer, tokenizer)
    for name, weight in _gguf_tensors(model).items():
        writer.add_tensor(name, weight)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
