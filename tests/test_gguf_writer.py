"""The tiny GGUF writer must produce a file transformers loads back to the very same model and tokenizer.

Other tests use `write_tiny_gguf` as a stand-in for a real GGUF checkpoint, so a silent mismatch here
(a missed q/k permutation, a lost merge) would make them test the wrong model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_gguf import tiny_llama, write_tiny_gguf
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = ("the user bought a red kettle", "hello world, the next item", "Ünseen wörds 123!")


def test_gguf_roundtrip_matches_original(tmp_path: Path) -> None:
    model, tokenizer = tiny_llama(seed=0)
    path = write_tiny_gguf(model, tokenizer, tmp_path / "tiny.gguf")

    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    loaded_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)

    for key in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"):
        assert getattr(loaded.config, key) == getattr(model.config, key), key
    assert loaded.config.vocab_size == model.config.vocab_size
    # GGUF stores the epsilon as float32, so it comes back rounded.
    assert loaded.config.rms_norm_eps == pytest.approx(model.config.rms_norm_eps, rel=1e-6)

    for prompt in PROMPTS:
        ids = tokenizer(prompt)["input_ids"]
        assert loaded_tokenizer(prompt)["input_ids"] == ids, prompt
        assert loaded_tokenizer.decode(ids) == prompt
    assert (loaded_tokenizer.bos_token_id, loaded_tokenizer.eos_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
    )

    batch = tokenizer(list(PROMPTS[:2]), padding=False)["input_ids"]
    length = min(map(len, batch))
    input_ids = torch.tensor([[tokenizer.bos_token_id, *ids[:length]] for ids in batch])
    with torch.no_grad():
        expected = model(input_ids, output_hidden_states=True)
        actual = loaded(input_ids, output_hidden_states=True)
    torch.testing.assert_close(actual.hidden_states[-1], expected.hidden_states[-1], rtol=0, atol=1e-5)
    torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=1e-5)
