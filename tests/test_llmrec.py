"""The E4SRec-style LLM recommender: truncated backbone, LoRA-only training, padding, save/load, 4/8-bit."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from helpers_data import LLM_OUTPUTS, backbone_settings, llm_config, prompt_settings
from safetensors.torch import load_file
from transformers import AutoConfig, LlamaConfig, LlamaModel

from slmrec.batching import pad_left
from slmrec.config import schema_defaults
from slmrec.models import llmrec
from slmrec.models.llmrec import (
    BackboneError,
    LLMRec,
    LLMRecConfig,
    LoraSettings,
    add_lora,
    build_llmrec,
    count_parameters,
    load_backbone,
    load_llmrec,
)

NUM_ITEMS = 40
ITEM_DIM = 16
LAYERS = 2
HISTORIES = [[3, 7, 1, 9, 4], [12, 5], [8], [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]]
LABELS = torch.tensor([11, 6, 9, 24])
PROJECTIONS = {"input_proj.weight", "input_proj.bias", "output_proj.weight", "output_proj.bias"}


@pytest.fixture(scope="module")
def table() -> torch.Tensor:
    return torch.randn(NUM_ITEMS + 1, ITEM_DIM, generator=torch.Generator().manual_seed(3))


def config(backbone: str, layers: int = LAYERS, **loading) -> LLMRecConfig:
    # No LoRA dropout (llm_config): train mode is then deterministic, which the comparisons below need.
    table = torch.zeros(NUM_ITEMS + 1, ITEM_DIM)
    return LLMRecConfig.from_settings(
        backbone, backbone_settings(**loading), prompt_settings(), llm_config(), layers, table
    )


def llm_files(directory) -> dict[str, str]:
    return {name: str(directory / file) for name, file in LLM_OUTPUTS.items()}


def load(backbone: str, layers: int, quantization: str = "none"):
    return load_backbone(backbone, layers, "float32", quantization)


def perturb_lora(model: LLMRec, seed: int = 1) -> None:
    """LoRA B starts at zero (the adapter is a no-op); give it values so tests see the adapters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)


def trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def expected_trainable(model: LLMRec) -> set[str]:
    prefix = "backbone.base_model.model.layers"
    block = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn"}
    lora = {
        f"{prefix}.{layer}.{block.get(module, 'mlp')}.{module}.lora_{ab}.default.weight"
        for layer in range(model.num_layers)
        for module in model.config.lora.target_modules
        for ab in "AB"
    }
    return lora | PROJECTIONS


# --- the backbone --------------------------------------------------------------------------------


def llama_parameters(cfg, layers: int) -> int:
    """Parameter count of a LlamaModel (no LM head) with `layers` decoder layers, from its config."""
    hidden, inter = cfg.hidden_size, cfg.intermediate_size
    head_dim = getattr(cfg, "head_dim", None) or hidden // cfg.num_attention_heads
    q = hidden * cfg.num_attention_heads * head_dim
    kv = 2 * hidden * cfg.num_key_value_heads * head_dim
    o = cfg.num_attention_heads * head_dim * hidden
    per_layer = q + kv + o + 3 * hidden * inter + 2 * hidden
    return cfg.vocab_size * hidden + layers * per_layer + hidden


def test_preset_is_a_hugging_face_checkpoint(backbone):
    files = {p.name for p in Path(backbone).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    cfg = AutoConfig.from_pretrained(backbone)
    assert cfg.model_type == "llama"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (8, 64, 4)


def test_truncation_keeps_only_the_first_layers(backbone):
    cfg = AutoConfig.from_pretrained(backbone)
    two = load(backbone, 2)
    full = load(backbone, 8)
    assert len(two.layers) == 2 and two.config.num_hidden_layers == 2
    assert len(full.layers) == 8
    count = sum(p.numel() for p in two.parameters())
    assert count == llama_parameters(cfg, 2)
    assert sum(p.numel() for p in full.parameters()) == llama_parameters(cfg, 8)
    assert count < llama_parameters(cfg, 8)

    # The kept layers hold the checkpoint's weights (loaded, not freshly initialised).
    saved = load_file(str(Path(backbone) / "model.safetensors"))
    for layer in (0, 1):
        key = f"model.layers.{layer}.self_attn.q_proj.weight"
        assert torch.equal(two.layers[layer].self_attn.q_proj.weight, saved[key])
    assert torch.equal(two.embed_tokens.weight, saved["model.embed_tokens.weight"])


@pytest.mark.parametrize("layers", [0, 9])
def test_impossible_layer_count_is_a_backbone_error(backbone, layers):
    with pytest.raises(BackboneError, match=f"layers = {layers}.*8 decoder layers"):
        load(backbone, layers)


def test_directory_without_config_is_a_backbone_error(tmp_path, backbone, table):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(BackboneError, match="backbone.path"):
        load(tmp_path, 2)
    with pytest.raises(BackboneError, match=r"backbone.path: .*missing does not exist"):
        build_llmrec(config(str(tmp_path / "missing")), table)


def test_a_truncated_backbone_is_logged_in_one_line_not_one_per_skipped_weight(backbone, caplog, capfd):
    caplog.set_level(logging.INFO)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()  # as in a stage (the test session runs at error)
    try:
        load(backbone, 2)
    finally:
        transformers.logging.set_verbosity(verbosity)
    logged = [record.getMessage() for record in caplog.records]
    captured = capfd.readouterr()
    assert logged == [f"backbone {backbone}: kept the first 2 of 8 layers (6 skipped), float32, quantization none"]
    for noise in ("LOAD REPORT", "UNEXPECTED", "model.layers", "not sharded"):
        assert noise not in captured.out + captured.err, noise


def test_bfloat16_backbone(backbone, table):
    model = build_llmrec(config(backbone, dtype="bfloat16"), table, seed=0).eval()
    assert model.backbone.get_input_embeddings().weight.dtype == torch.bfloat16
    with torch.no_grad():
        user = model.user_vectors(pad_left(HISTORIES, 12))
    assert user.shape == (len(HISTORIES), ITEM_DIM) and torch.isfinite(user).all()


# --- the model -------------------------------------------------------------------------------------


def test_prompt_is_tokenized_without_bos_and_with_the_template(backbone, table):
    model = build_llmrec(config(backbone), table, seed=0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(backbone)
    assert tokenizer.bos_token_id not in model.prompt_ids.tolist()  # the authors' code adds no special tokens
    assert tokenizer.unk_token_id not in model.prompt_ids.tolist() + model.suffix_ids.tolist()
    text = tokenizer.decode(model.prompt_ids)
    assert "predict next possible item to be purchased" in text
    assert "Response" in tokenizer.decode(model.suffix_ids)


def test_only_lora_and_projections_train(backbone, table):
    torch.manual_seed(0)
    model = build_llmrec(config(backbone), table, seed=0)
    perturb_lora(model)  # so LoRA A gets a non-zero gradient as well
    assert trainable_names(model) == expected_trainable(model)
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if k not in trainable_names(model)}
    table_before = model.item_table.clone()
    trainable_before = {k: v.clone() for k, v in model.trainable_state_dict().items()}

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    out = model(pad_left(HISTORIES, 12), LABELS)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    optimizer.step()

    assert torch.equal(model.item_table, table_before) and torch.equal(model.item_table, table.float())
    after = model.state_dict()
    for key, value in frozen_before.items():
        assert torch.equal(after[key], value), f"frozen weight {key} changed"
    changed = [k for k, v in model.trainable_state_dict().items() if not torch.equal(v, trainable_before[k])]
    assert set(changed) == set(trainable_before)
    # Loss is cross-entropy over all items; padding id 0 is never a candidate.
    scores = model.scores(out["user"].detach())
    assert scores.shape == (len(HISTORIES), NUM_ITEMS + 1) and torch.isinf(scores[:, 0]).all()
    assert torch.allclose(out["loss"].detach(), F.cross_entropy(scores, LABELS), atol=1e-6)


def test_padding_does_not_change_user_vectors(backbone, table):
    model = build_llmrec(config(backbone), table, seed=0)
    perturb_lora(model)
    model.eval()
    with torch.no_grad():
        reference = model.user_vectors(pad_left(HISTORIES, 12))
        for max_len in (16, 30):  # more left padding for every row
            assert torch.allclose(model.user_vectors(pad_left(HISTORIES, max_len)), reference, atol=1e-5)
        for i, history in enumerate(HISTORIES):  # alone (no padding) vs batched with longer rows
            alone = model.user_vectors(torch.tensor([history]))
            assert torch.allclose(alone[0], reference[i], atol=1e-5), i
        # Different histories do give different users (the check above is not vacuous).
        assert not torch.allclose(reference[0], reference[1], atol=1e-3)


def test_inputs_mask_padding_after_the_prompt_with_positions_counting_real_tokens(backbone, table):
    model = build_llmrec(config(backbone), table, seed=0).eval()
    items = pad_left([[5, 6, 7], [9]], 6)
    with torch.no_grad():
        rest, mask, positions = model._inputs(items)
        alone, alone_mask, alone_positions = model._inputs(torch.tensor([[9]]))
    n_prompt, n_suffix = len(model.prompt_ids), len(model.suffix_ids)
    total = n_prompt + 3 + n_suffix
    assert rest.shape[:2] == (2, 3 + n_suffix)  # items and suffix; the prompt is shared
    assert mask[0].tolist() == [1] * total
    assert mask[1].tolist() == [1] * n_prompt + [0, 0] + [1] * (total - n_prompt - 2)
    assert positions[0].tolist() == list(range(total))
    real = mask[1].bool()
    assert positions[1, real].tolist() == list(range(total - 2)) == alone_positions[0].tolist()
    assert alone_mask.all()
    assert torch.allclose(rest[1, 2:], alone[0])


def full_sequence_states(model: LLMRec, items: torch.Tensor, backbone: torch.nn.Module | None = None):
    """A backbone (`model`'s own by default) over `model`'s whole `[prompt][pad][items][suffix]` rows."""
    rest, mask, positions = model._inputs(items)
    prompt = model.backbone.get_input_embeddings()(model.prompt_ids).expand(len(items), -1, -1)
    return (backbone or model.backbone)(
        inputs_embeds=torch.cat([prompt, rest], 1),
        attention_mask=mask,
        position_ids=positions,
        output_hidden_states=True,
        use_cache=False,
    )


def test_layer_states(backbone, table):
    model = build_llmrec(config(backbone, layers=4), table, seed=0).eval()
    with torch.no_grad():
        out = model(pad_left(HISTORIES, 12), output_layer_states=True)
    hidden = model.backbone.config.hidden_size
    assert out["layer_states"].shape == (len(HISTORIES), 4, hidden)
    # The last layer's state is the final-normed one the user vector comes from.
    assert torch.allclose(out["layer_states"][:, -1], out["last_hidden"])
    assert torch.allclose(model.output_proj(out["layer_states"][:, -1]), out["user"], atol=1e-6)
    # Layer states of the first two layers match a 2-layer model of the same backbone.
    short = build_llmrec(config(backbone, layers=2), table, seed=0).eval()
    with torch.no_grad():
        two = full_sequence_states(model, pad_left(HISTORIES, 12), short.backbone)
        four = full_sequence_states(model, pad_left(HISTORIES, 12))
    assert torch.allclose(two.hidden_states[1], four.hidden_states[1], atol=1e-5)
    assert torch.allclose(four.hidden_states[2][:, -1], out["layer_states"][:, 1], atol=1e-5)


# --- the shared-prompt cache -----------------------------------------------------------------------


@pytest.mark.parametrize("layers", [2, 4])
def test_prompt_cache_gives_the_scores_and_states_of_the_full_prompt(backbone, table, layers):
    model = build_llmrec(config(backbone, layers=layers), table, seed=0)
    perturb_lora(model)  # LoRA on the attention projections changes the prompt's keys and values
    model.eval()
    items = pad_left(HISTORIES, 12)
    with torch.no_grad():
        cached = model(items, output_layer_states=True)
        model.prompt_cache = False
        full = model(items, output_layer_states=True)
    assert torch.allclose(cached["layer_states"], full["layer_states"], atol=1e-5)
    assert torch.allclose(model.scores(cached["user"]), model.scores(full["user"]), atol=1e-4)


def test_prompt_cache_is_computed_once_per_evaluation_and_again_after_training(backbone, table, monkeypatch):
    model = build_llmrec(config(backbone), table, seed=0).eval()
    calls = []
    original = LLMRec._prompt_states

    def counted(self):
        calls.append(self._frozen_prompt is None)
        return original(self)

    monkeypatch.setattr(LLMRec, "_prompt_states", counted)
    items = pad_left(HISTORIES, 12)
    with torch.no_grad():
        before = model.user_vectors(items)
        model.user_vectors(items)
    assert calls == [True, False]  # the second batch reused the first one's prompt
    model.train()
    perturb_lora(model)  # a training step changed the adapters
    model.eval()
    with torch.no_grad():
        after = model.user_vectors(items)
        model.prompt_cache = False
        expected = model.user_vectors(items)
    assert calls[-1] is True  # recomputed: the mode changed
    assert torch.allclose(after, expected, atol=1e-5)
    assert not torch.allclose(after, before, atol=1e-3)
    # Loading weights (a checkpoint, the best model at the end of training) also drops the kept prompt.
    model.prompt_cache = True
    with torch.no_grad():
        model.user_vectors(items)
        reloaded = build_llmrec(config(backbone), table, seed=0)
        perturb_lora(reloaded, seed=9)
        model.load_state_dict(reloaded.trainable_state_dict(), strict=False)
        assert torch.allclose(model.user_vectors(items), reloaded.eval().user_vectors(items), atol=1e-5)


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_prompt_cache_trains_lora_like_the_full_prompt(backbone, table, gradient_checkpointing):
    def gradients(prompt_cache: bool) -> tuple[float, dict[str, torch.Tensor]]:
        settings = {**llm_config(), "gradient_checkpointing": gradient_checkpointing}
        cfg = LLMRecConfig.from_settings(
            backbone, backbone_settings(), prompt_settings(), settings, LAYERS, torch.zeros(NUM_ITEMS + 1, ITEM_DIM)
        )
        model = build_llmrec(cfg, table, seed=0)
        perturb_lora(model)
        model.train()
        model.prompt_cache = prompt_cache
        loss = model(pad_left(HISTORIES, 12), LABELS)["loss"]
        loss.backward()
        return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    loss, cached = gradients(True)
    full_loss, full = gradients(False)
    assert loss == pytest.approx(full_loss, abs=1e-5)
    assert cached.keys() == full.keys()
    # The prompt's keys and values depend on layer 0's adapters: their gradients flow through the cache.
    first = [name for name in cached if ".layers.0." in name and "lora_A" in name]
    assert first and all(cached[name].abs().sum() > 0 for name in first)
    for name in cached:
        assert torch.allclose(cached[name], full[name], atol=1e-5), name


def test_save_load_round_trip(tmp_path, backbone, table):
    model = build_llmrec(config(backbone), table, seed=0)
    perturb_lora(model)
    model.eval()
    model.save_artifacts(llm_files(tmp_path))
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "trainable.safetensors"}
    assert set(load_file(str(tmp_path / "trainable.safetensors"))) == expected_trainable(model)
    assert json.loads((tmp_path / "config.json").read_text())["layers"] == LAYERS

    loaded = load_llmrec(tmp_path, table).eval()
    items = pad_left(HISTORIES, 12)
    with torch.no_grad():
        expected = model.scores(model.user_vectors(items))
        got = loaded.scores(loaded.user_vectors(items))
        fresh = build_llmrec(config(backbone), table, seed=5).eval()
        other = fresh.scores(fresh.user_vectors(items))
    assert torch.equal(got, expected)
    assert not torch.allclose(other, expected)  # the weights came from the file, not the seed

    # Weights that do not fit the configured model are refused.
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["lora"]["target_modules"] = ["q_proj", "v_proj"]  # the weights were trained for the defaults
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not fit"):
        load_llmrec(tmp_path, table)


# --- 4-bit and 8-bit (bitsandbytes on the CPU) ----------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory, backbone, table) -> tuple[Path, torch.Tensor]:
    """A saved full-precision model with non-trivial LoRA weights, and its user vectors."""
    directory = tmp_path_factory.mktemp("saved")
    model = build_llmrec(config(backbone), table, seed=0)
    perturb_lora(model)
    model.save_artifacts(llm_files(directory))
    model.eval()
    with torch.no_grad():
        users = model.user_vectors(pad_left(HISTORIES, 12))
    return directory, users


QUANTIZED_DTYPE = {"4bit": torch.uint8, "8bit": torch.int8}


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_loading_stays_close_to_full_precision(saved, table, quantization):
    directory, reference = saved
    model = load_llmrec(directory, table, quantization=quantization)
    assert model.config.quantization == quantization
    assert getattr(model.backbone, "is_quantized", False)
    adapted = model.backbone.base_model.model.layers[0].mlp.gate_proj.base_layer
    assert adapted.weight.dtype == QUANTIZED_DTYPE[quantization]
    assert trainable_names(model) == expected_trainable(model)
    # Train mode (no dropout configured): the grad-capable path, which works on every CPU.
    model.train()
    with torch.no_grad():
        users = model.user_vectors(pad_left(HISTORIES, 12))
    assert torch.isfinite(users).all()
    similarity = F.cosine_similarity(users, reference, dim=-1)
    assert (similarity > 0.9).all(), similarity
    assert not torch.equal(users, reference)  # it really ran quantized


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantized_eval_forward(saved, table, quantization):
    directory, reference = saved
    model = load_llmrec(directory, table, quantization=quantization).eval()
    with torch.no_grad():
        users = model.user_vectors(pad_left(HISTORIES, 12))
        model.prompt_cache = False
        without_cache = model.user_vectors(pad_left(HISTORIES, 12))
    assert (F.cosine_similarity(users, reference, dim=-1) > 0.9).all()
    # The shared-prompt cache works on a quantized backbone too, with the same scores.
    assert torch.allclose(model.scores(users), model.scores(without_cache), atol=1e-3)


def test_qlora_training_step(backbone, table):
    """A 4-bit base with LoRA on top: finite loss, LoRA moves, the quantized base does not."""
    reference = build_llmrec(config(backbone), table, seed=0)
    perturb_lora(reference)
    reference.train()
    reference(pad_left(HISTORIES, 12), LABELS)["loss"].backward()

    model = build_llmrec(config(backbone, quantization="4bit"), table, seed=0)
    model.load_state_dict(reference.trainable_state_dict(), strict=False)
    model.train()
    base_before = {k: v.clone() for k, v in model.state_dict().items() if k not in trainable_names(model)}
    lora_before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    out = model(pad_left(HISTORIES, 12), LABELS)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    # The gradients through the 4-bit base point the same way as through the full-precision one.
    reference_grads = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        if p.requires_grad:
            similarity = F.cosine_similarity(p.grad.flatten(), reference_grads[name].grad.flatten(), dim=0)
            assert similarity > 0.9, (name, similarity)
    optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base_before.items())
    assert all(not torch.equal(v, lora_before[k]) for k, v in model.trainable_state_dict().items())
    assert torch.isfinite(model(pad_left(HISTORIES, 12), LABELS)["loss"])


@pytest.mark.parametrize("error", [ImportError("No module named 'bitsandbytes'"), RuntimeError("CUDA required")])
def test_bitsandbytes_failure_names_the_setting(backbone, monkeypatch, error):
    real = llmrec.AutoModel

    class FailingAutoModel:
        @staticmethod
        def from_pretrained(path, **options):
            if "quantization_config" in options:
                raise error
            return real.from_pretrained(path, **options)

    monkeypatch.setattr(llmrec, "AutoModel", FailingAutoModel)
    with pytest.raises(BackboneError, match="backbone.quantization") as caught:
        load(backbone, 2, quantization="4bit")
    assert caught.value.__cause__ is error and str(error) in str(caught.value)
    # Without quantization the same failure is not disguised (it is not about bitsandbytes).
    assert len(load(backbone, 2).layers) == 2


def test_layer_count_comes_from_the_checkpoint_config(tmp_path, backbone):
    """A checkpoint with fewer layers than asked (e.g. a truncated copy) is refused with its own count."""
    copy = Path(shutil.copytree(backbone, tmp_path / "copy"))
    cfg = json.loads((copy / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BackboneError, match="has 3 decoder layers"):
        load(copy, 4)
    assert len(load(copy, 3).layers) == 3


def test_parameter_counts_do_not_shrink_when_quantized(backbone):
    full = count_parameters(load(backbone, 2))["total"]
    for quantization in ("8bit", "4bit"):
        assert count_parameters(load(backbone, 2, quantization=quantization))["total"] == full


@pytest.mark.parametrize("layers,table_5", [(32, 0.023), (8, 0.006), (4, 0.003)])
def test_lora_defaults_give_table_5_trainable_parameters_on_llama2_7b(layers, table_5):
    """Table 5's trainable parameters (LoRA; the paper does not count the two small projections), on a
    LLaMA-2-7B-shaped backbone built on the meta device: no weights are allocated."""
    shape = LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers, num_attention_heads=32, vocab_size=32000
    )
    with torch.device("meta"):
        backbone = add_lora(LlamaModel(shape), LoraSettings(**schema_defaults("teacher")["lora"]), False)
    lora = sum(p.numel() for name, p in backbone.named_parameters() if "lora_" in name)
    assert lora == 724_992 * layers  # r (in + out) for gate, up and down: 16 x (4096 + 11008) x 3
    assert round(lora / 1e9, 3) == table_5
    assert all(p.requires_grad == ("lora_" in name) for name, p in backbone.named_parameters())


def test_direct_inference_reads_layer_k_through_the_final_norm_and_projection(backbone, table):
    model = build_llmrec(config(backbone, layers=4), table, seed=0)
    perturb_lora(model)
    model.eval()
    items = pad_left(HISTORIES, 12)
    with torch.no_grad():
        full = model.user_vectors(items)
        states = full_sequence_states(model, items).hidden_states  # embeddings, then each layer's output
        norm = model.backbone.get_base_model().norm
        for k in (1, 2, 3):
            with model.truncated(k):
                read = model.user_vectors(items)
                model.prompt_cache = False
                uncached = model.user_vectors(items)
                model.prompt_cache = True
            expected = model.output_proj(norm(states[k][:, -1]).float())
            assert torch.allclose(read, expected, atol=1e-5), k
            assert torch.allclose(uncached, expected, atol=1e-5), k
        with model.truncated(4):
            assert torch.allclose(model.user_vectors(items), full, atol=1e-6)
        assert torch.equal(model.user_vectors(items), full)  # the whole model is back afterwards
    with pytest.raises(ValueError, match="1 <= layers <= 4"):
        with model.truncated(5):
            pass
