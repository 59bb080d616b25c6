"""Miniature LLaMA, Gemma 3 and Qwen2 models and their tokenizer written as GGUF files, for tests of the
`gguf_file=` loading path.

No real GGUF checkpoint is small enough to ship with the tests, so we build one: a random model of the family, a
byte-level BPE trained on a few sentences, and a writer that lays both out the way llama.cpp's
`convert_hf_to_gguf.py` does, so `transformers` reads the file back unchanged. What differs by family:
- LLaMA: q/k rows permuted to llama.cpp's interleaved rotary layout;
- Gemma 3: RMSNorm weights stored as 1 + w (the HF module multiplies by 1 + w, llama.cpp by the stored weight),
  the head size and the sliding window written, the output matrix left out (tied embeddings);
- Qwen2: biases on q/k/v, nothing permuted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, GGUFWriter, LlamaFileType, TokenType, get_tensor_name_map
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

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


def tiny_gemma_tokenizer() -> GemmaTokenizer:
    """A sentencepiece-style BPE like Gemma's (GGUF's `llama` tokenizer model): its special tokens, the 256 byte
    fallbacks, the characters of `CORPUS`, then every prefix of its words (spaces spelled "▁"), shortest first.

    A Gemma GGUF lists no merges: the reader rebuilds them from the order of the tokens, so the merges here are
    built the same way, from the same order.
    """
    from transformers.tokenization_utils_base import generate_merges

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    fallbacks = [f"<0x{byte:02X}>" for byte in range(256)]
    words = {"▁" * (i > 0) + word for line in CORPUS for i, word in enumerate(line.split(" "))}
    prefixes = sorted({w[:n] for w in words for n in range(2, len(w) + 1)}, key=lambda p: (len(p), p))
    characters = sorted({c for w in words for c in w})
    tokens = specials + fallbacks + characters + prefixes
    vocab = {token: index for index, token in enumerate(tokens)}
    merges = generate_merges(vocab, {token: -index for index, token in enumerate(tokens)})
    return GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=False)


def tiny_gemma3(seed: int = 0) -> tuple[Gemma3ForCausalLM, GemmaTokenizer]:
    """A random 6-layer Gemma 3 (hidden 64, 4 heads, 1 KV head), float32, with its default layer pattern (five
    sliding-window layers, then a global one) and a window of 4 tokens, short enough that prompts cross it.

    What a GGUF does not carry (the layer pattern, the query scaling, the local rotary base) is left at the config's
    defaults, which the reader falls back on too.
    """
    tokenizer = tiny_gemma_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=4,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config).to(torch.float32).eval()
    with torch.no_grad():  # Gemma initialises its norms at 0 (a weight of 1 + 0): make them matter
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0, 0.1)
    return model, tokenizer


def tiny_qwen2(seed: int = 0) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """A random 4-layer Qwen2 (hidden 64, 4 heads, 2 KV heads, q/k/v biases), float32."""
    tokenizer = tiny_tokenizer()
    config = Qwen2Config(
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
    model = Qwen2ForCausalLM(config).to(torch.float32).eval()
    with torch.no_grad():  # biases start at 0: make them matter
        for name, param in model.named_parameters():
            if name.endswith("proj.bias"):
                param.normal_(0, 0.1)
    return model, tokenizer


TINY_MODELS = {"llama": tiny_llama, "gemma3": tiny_gemma3, "qwen2": tiny_qwen2}
# The GGUF architecture of each Hugging Face model type.
GGUF_ARCHS = {"llama": MODEL_ARCH.LLAMA, "gemma3_text": MODEL_ARCH.GEMMA3, "qwen2": MODEL_ARCH.QWEN2}


def permute_qk(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder q/k rows from HF's half-split rotary layout to llama.cpp's interleaved one.

    This is `LlamaModel.permute` from llama.cpp's converter, with `heads` the projection's own head
    count (query heads for q, KV heads for k). Transformers' GGUF loader undoes it, so writing the
    weights unpermuted would load without error and silently scramble the rotary embedding.
    """
    halves = weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
    return halves.swapaxes(1, 2).reshape(weight.shape)


def _gguf_tensors(model: PreTrainedModel) -> dict[str, np.ndarray]:
    """The model's weights under their GGUF names, as contiguous float32 arrays in (out, in) order, as llama.cpp
    stores them for the model's family.

    A tied `lm_head` is left out, as llama.cpp does: the loader infers `tie_word_embeddings` from
    whether `output.weight` is present.
    """
    config = model.config
    arch = GGUF_ARCHS[config.model_type]
    name_map = get_tensor_name_map(arch, config.num_hidden_layers)
    tensors: dict[str, np.ndarray] = {}
    for hf_name, param in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        stem, suffix = hf_name.rsplit(".", 1)
        gguf_stem = name_map.get_name(stem)
        if gguf_stem is None:
            raise ValueError(f"no GGUF name for {hf_name}")
        weight = param.detach().to(torch.float32).cpu().numpy()
        if arch == MODEL_ARCH.LLAMA and gguf_stem.endswith(".attn_q"):
            weight = permute_qk(weight, config.num_attention_heads)
        elif arch == MODEL_ARCH.LLAMA and gguf_stem.endswith(".attn_k"):
            weight = permute_qk(weight, config.num_key_value_heads)
        elif arch == MODEL_ARCH.GEMMA3 and hf_name.endswith("norm.weight"):
            weight = weight + 1
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


def _add_sentencepiece_tokenizer(writer: GGUFWriter, tokenizer: GemmaTokenizer) -> None:
    """Write a Gemma vocabulary under `tokenizer.ggml.*` (model `llama`): tokens in id order with their types, no
    merges (as llama.cpp writes Gemma's)."""
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    special = set(tokenizer.all_special_tokens) - {tokenizer.unk_token}

    def kind(token: str) -> TokenType:
        if token == tokenizer.unk_token:
            return TokenType.UNKNOWN
        if token in special:
            return TokenType.CONTROL
        return TokenType.BYTE if re.fullmatch(r"<0x[0-9A-F]{2}>", token) else TokenType.NORMAL

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(index) for index in range(len(tokens))])
    writer.add_token_types([kind(token) for token in tokens])
    for name in ("bos", "eos", "unk", "pad"):
        getattr(writer, f"add_{name}_token_id")(getattr(tokenizer, f"{name}_token_id"))
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def write_tiny_gguf(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, path: Path) -> Path:
    """Write `model` (a LLaMA, Gemma 3 or Qwen2) and `tokenizer` to `path` as an all-F32 GGUF, and return `path`.

    Load it back with `from_pretrained(path.parent, gguf_file=path.name)`.
    """
    config = model.config
    arch = GGUF_ARCHS[config.model_type]
    rope = config.rope_parameters
    if arch == MODEL_ARCH.GEMMA3:
        rope = rope["full_attention"]  # the global layers'; the local base is the config's default
    if rope.get("rope_type", "default") != "default":
        raise ValueError("only the default rotary embedding is written; rope scaling keys are not")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    writer = GGUFWriter(path, MODEL_ARCH_NAMES[arch])
    writer.add_name(f"tiny-{MODEL_ARCH_NAMES[arch]}")  # transformers reads a llama file named "*mistral*" as Mistral
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_vocab_size(config.vocab_size)
    if arch == MODEL_ARCH.GEMMA3:
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
        writer.add_sliding_window(config.sliding_window)
    else:
        writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    if isinstance(tokenizer, GemmaTokenizer):
        _add_sentencepiece_tokenizer(writer, tokenizer)
    else:
        _add_tokenizer(writer, tokenizer)
    for name, weight in _gguf_tensors(model).items():
        writer.add_tensor(name, weight)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
