"""SLMRec distillation: block mapping, the loss terms and their switches, offline and online teachers."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import torch
import torch.nn.functional as F
from helpers_data import (
    LLM_OUTPUTS,
    data_inputs,
    distill_settings,
    llm_config,
)
from helpers_distill import ITEM_DIM, distill_env, llm_settings, make_llmrec, run_states, run_student
from helpers_training import Killed, kill_at
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaModel

from slmrec import training
from slmrec.batching import pad_left
from slmrec.config import schema_defaults
from slmrec.data.samples import NextItemDataset, load_training_data
from slmrec.errors import ArtifactError
from slmrec.models import llmrec
from slmrec.models.distill import (
    DistillConfigError,
    Distiller,
    DistillWeights,
    TeacherStates,
    block_boundaries,
    samples_digest,
    state_alignment,
    teacher_boundary_states,
)
from slmrec.models.llmrec import LLMRec, load_llmrec
from slmrec.stages import student as student_stage
from slmrec.targets import (
    ABLATION_VARIANTS,
    HIDDEN_TERMS,
    LOSS_TERMS,
    STUDENT_ONLINE,
    ablation_target,
    student_distill,
)
from slmrec.training import TrainLog

NUM_ITEMS = 40
HISTORIES = [[3, 7, 1, 9, 4], [12, 5], [8], [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]]
LABELS = torch.tensor([11, 6, 9, 24])
ITEMS = pad_left(HISTORIES, 12)
TERM_OF = {term.name: term.log_key for term in LOSS_TERMS}
DISTILL = schema_defaults("distill")
# λ1 = 1, λ2 = 0.1, λ3 = 1; the score terms off
PAPER_WEIGHTS = DistillWeights(**{t.name: DISTILL[t.weight_key] if t in HIDDEN_TERMS else 0.0 for t in LOSS_TERMS})


@pytest.fixture(scope="module")
def table() -> torch.Tensor:
    return torch.randn(NUM_ITEMS + 1, ITEM_DIM, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def pair(backbone, table) -> SimpleNamespace:
    """A 4-layer teacher and a 2-layer student (pristine copies: tests deep-copy before training)."""
    return SimpleNamespace(
        teacher=make_llmrec(backbone, table, layers=4, seed=1), student=make_llmrec(backbone, table, layers=2, seed=2)
    )


def distiller(
    pair, weights: DistillWeights | None = None, online: bool = False, blocks: int = 2, teacher_gradients: bool = True
) -> Distiller:
    torch.manual_seed(0)
    return Distiller(
        copy.deepcopy(pair.student),
        copy.deepcopy(pair.teacher),
        blocks,
        weights or PAPER_WEIGHTS,
        online=online,
        teacher_gradients=teacher_gradients,
        settings=DISTILL,
    )


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def train_steps(model: Distiller, steps: int = 3) -> list[dict[str, torch.Tensor]]:
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    outputs = []
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(ITEMS, LABELS)
        out["loss"].backward()
        optimizer.step()
        outputs.append(out)
    return outputs


# --- blocks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "teacher,student,blocks,expected",
    [
        (32, 4, 4, [(8, 1), (16, 2), (24, 3), (32, 4)]),
        (8, 4, 4, [(2, 1), (4, 2), (6, 3), (8, 4)]),
        (8, 2, 2, [(4, 1), (8, 2)]),
        (8, 4, 1, [(8, 4)]),
        (4, 4, 2, [(2, 2), (4, 4)]),  # what a student without a teacher (CE and MS only) cuts itself into
    ],
)
def test_block_boundaries(teacher, student, blocks, expected):
    assert block_boundaries(teacher, student, blocks) == expected


@pytest.mark.parametrize(
    "teacher,student,blocks,message",
    [
        (8, 3, 4, r"student has 3 layers, which distill.blocks = 4 does not divide"),
        (6, 4, 4, r"teacher has 6 layers, which distill.blocks = 4 does not divide"),
        (8, 4, 0, r"distill.blocks must be at least 1, got 0"),
        (8, 4, -2, r"distill.blocks must be at least 1"),
        (4, 8, 4, r"the student \(8 layers\) must not be deeper than its teacher \(4 layers\)"),
    ],
)
def test_invalid_block_configurations(teacher, student, blocks, message):
    with pytest.raises(DistillConfigError, match=message):
        block_boundaries(teacher, student, blocks)
    assert issubclass(DistillConfigError, ValueError)


def test_distiller_checks_blocks_and_teacher(pair):
    with pytest.raises(DistillConfigError, match="does not divide"):
        distiller(pair, blocks=4)  # a 2-layer student cannot be cut into 4 blocks
    without = Distiller(copy.deepcopy(pair.student), None, 2, DistillWeights(1.0, 0.0, 0.0, 0.0, 0.0), teacher_layers=4)
    with pytest.raises(DistillConfigError, match="read the teacher need its states or the teacher"):
        without(ITEMS, LABELS)  # neither cached states in the batch nor a live teacher
    with pytest.raises(DistillConfigError, match="online distillation .* needs the teacher"):
        Distiller(copy.deepcopy(pair.student), None, 2, DistillWeights(0.0, 0.0, 0.0, 0.0, 0.0), online=True)


def test_hidden_size_mismatch_is_a_config_error(pair, backbone, table):
    small = LlamaModel(
        LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2)
    )
    teacher = LLMRec(llm_settings(backbone, table, 4), small, table, torch.tensor([1, 5, 6]), torch.tensor([7]))
    with pytest.raises(DistillConfigError, match="teacher hidden size 32 differs from the student's 64"):
        Distiller(copy.deepcopy(pair.student), teacher, 2, PAPER_WEIGHTS)


# --- the loss -------------------------------------------------------------------------------------


def test_terms_are_what_the_paper_defines(pair):
    model = distiller(pair).eval()
    out = model(ITEMS, LABELS)
    terms = out["terms"]
    assert set(terms) == {"loss_ce", "loss_cos", "loss_l2", "loss_ms"}
    assert model.boundaries == [(2, 1), (4, 2)]
    assert len(model.adapters) == 1  # multiple supervision on the first n - 1 block outputs

    with torch.no_grad():
        s = model.student(ITEMS, LABELS, output_layer_states=True)
        t = model.teacher(ITEMS, output_layer_states=True)
    s_states = [s["layer_states"][:, 0], s["layer_states"][:, 1]]
    t_states = [t["layer_states"][:, 1], t["layer_states"][:, 3]]
    cos = sum((1 - F.cosine_similarity(a, b, dim=-1)).mean() for a, b in zip(s_states, t_states, strict=True))
    l2 = sum((a - b).norm(dim=-1).mean() for a, b in zip(s_states, t_states, strict=True))
    ms = F.cross_entropy(model.student.scores(model.adapters[0](s_states[0])), LABELS)
    assert torch.allclose(terms["loss_ce"], s["loss"], atol=1e-5)
    assert torch.allclose(terms["loss_cos"], cos, atol=1e-5)
    assert torch.allclose(terms["loss_l2"], l2, atol=1e-4)
    assert torch.allclose(terms["loss_ms"], ms, atol=1e-5)
    w = PAPER_WEIGHTS
    total = (
        terms["loss_ce"] + w.cos * terms["loss_cos"] + w.l2 * terms["loss_l2"] + w.multi_supervision * terms["loss_ms"]
    )
    assert torch.allclose(out["loss"], total, atol=1e-5)
    assert all(v > 0 for v in terms.values())
    with torch.no_grad():
        assert torch.allclose(out["user"], model.student.user_vectors(ITEMS), atol=1e-6)


@pytest.mark.parametrize("term", list(TERM_OF))
def test_zero_weight_removes_exactly_its_term(pair, term):
    weights = DistillWeights(cos=1.0, l2=0.1, multi_supervision=0.1, kd_logits=1.0, kd_rank=0.8)
    model = distiller(pair, weights).eval()
    with torch.no_grad():
        full = model(ITEMS, LABELS)
        model.weights = DistillWeights(**{**vars(weights), term: 0.0})
        reduced = model(ITEMS, LABELS)
    key = TERM_OF[term]
    assert key in full["terms"] and key not in reduced["terms"]
    assert set(full["terms"]) - set(reduced["terms"]) == {key}
    for other, value in reduced["terms"].items():
        assert torch.equal(value, full["terms"][other]), other  # the other terms are untouched
    difference = full["loss"] - reduced["loss"]
    assert torch.allclose(difference, getattr(weights, term) * full["terms"][key], atol=1e-5)


def test_all_weights_zero_is_plain_cross_entropy_without_teacher(pair):
    student = copy.deepcopy(pair.student).eval()
    model = Distiller(student, None, 2, DistillWeights(0.0, 0.0, 0.0, 0.0, 0.0)).eval()
    assert len(model.adapters) == 0 and model.teacher is None
    with torch.no_grad():
        out = model(ITEMS, LABELS)
        plain = student(ITEMS, LABELS)["loss"]
    assert set(out["terms"]) == {"loss_ce"}
    assert torch.equal(out["loss"], plain)
    # Multiple supervision alone needs no teacher either.
    alone = Distiller(copy.deepcopy(pair.student), None, 2, DistillWeights(0.0, 0.0, 0.1, 0.0, 0.0))
    assert set(alone(ITEMS, LABELS)["terms"]) == {"loss_ce", "loss_ms"}


def test_forward_without_labels_scores_with_the_student(pair):
    model = distiller(pair).eval()
    with torch.no_grad():
        out = model(ITEMS)
        expected = model.student.user_vectors(ITEMS)
    assert "loss" not in out and torch.equal(out["user"], expected)


# --- offline --------------------------------------------------------------------------------------


def test_offline_teacher_is_frozen_and_in_eval_mode(pair):
    model = distiller(pair)
    model.train()
    assert model.training and model.student.training
    assert not model.teacher.training
    assert all(not m.training for m in model.teacher.modules())
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert not any(k.startswith("teacher.") for k in model.trainable_state_dict())
    assert any(k.startswith("adapters.") for k in model.trainable_state_dict())


def test_offline_gradients_do_not_reach_the_teacher(pair):
    model = distiller(pair)
    teacher_before = snapshot(model.teacher)
    student_before = snapshot(model.student)
    adapters_before = snapshot(model.adapters)
    model.train()
    out = model(ITEMS, LABELS)
    out["loss"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    lora = [p for n, p in model.student.named_parameters() if "lora_" in n]
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert all(p.grad is not None for p in model.adapters.parameters())

    train_steps(model, steps=3)
    assert bit_identical(snapshot(model.teacher), teacher_before)
    assert not bit_identical(snapshot(model.student), student_before)
    assert not bit_identical(snapshot(model.adapters), adapters_before)
    assert all(p.grad is None for p in model.teacher.parameters())


# --- online ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("teacher_gradients", [True, False])
def test_online_trains_teacher_and_student(pair, teacher_gradients):
    model = distiller(pair, online=True, teacher_gradients=teacher_gradients)
    model.train()
    assert model.teacher.training
    assert any("lora_" in k for k in model.trainable_state_dict() if k.startswith("teacher."))
    lora_before = {k: v.clone() for k, v in model.teacher.trainable_state_dict().items()}
    frozen = {k: v.clone() for k, v in model.teacher.state_dict().items() if k not in lora_before}

    out = model(ITEMS, LABELS)
    assert "loss_teacher" in out["terms"]
    expected = sum(
        w * out["terms"][k]
        for k, w in {
            "loss_ce": 1,
            "loss_teacher": 1,
            "loss_cos": PAPER_WEIGHTS.cos,
            "loss_l2": PAPER_WEIGHTS.l2,
            "loss_ms": PAPER_WEIGHTS.multi_supervision,
        }.items()
    )
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    out["loss"].backward()
    teacher_grads = {n: p.grad.clone() for n, p in model.teacher.named_parameters() if p.requires_grad}
    assert teacher_grads and all(g.abs().sum() > 0 for n, g in teacher_grads.items() if "lora_" in n)

    # Detached, the teacher's gradient is that of its own CE; by default (the authors' code) the alignment
    # terms pull the teacher towards the student as well.
    reference = copy.deepcopy(pair.teacher).train()
    reference(ITEMS, LABELS)["loss"].backward()
    own_ce = [
        torch.allclose(teacher_grads[name], p.grad, atol=1e-6)
        for name, p in reference.named_parameters()
        if p.requires_grad
    ]
    assert all(own_ce) if not teacher_gradients else not all(own_ce)

    model.zero_grad()
    train_steps(model, steps=3)
    after = model.teacher.trainable_state_dict()
    assert all(not torch.equal(after[k], v) for k, v in lora_before.items())
    state = model.teacher.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())


# --- ablation settings ----------------------------------------------------------------------------


def test_student_targets_read_exactly_the_weights_they_keep():
    base = {**schema_defaults("distill"), "cos_weight": 1.0, "l2_weight": 0.1, "multi_supervision_weight": 0.01}
    kept = {
        "ce": set(),
        "ce_cos": {"cos"},
        "ce_cos_l2": {"cos", "l2"},
        "ce_cos_ms": {"cos", "multi_supervision"},
        "all": {"cos", "l2", "multi_supervision"},
        "ce_logits": {"kd_logits"},
        "ce_rank": {"kd_rank"},
        "init_ce": set(),
        "init_logits": {"kd_logits"},
        "init_rank": {"kd_rank"},
        "sasrec_logits": {"kd_logits"},
        "sasrec_rank": {"kd_rank"},
    }
    assert set(ABLATION_VARIANTS) == set(kept) | {"sasrec"}
    for variant, terms in kept.items():
        settings = student_distill(ablation_target(variant), base)
        sasrec = variant.startswith("sasrec")
        for term in LOSS_TERMS:
            expected = base[term.weight_key] if term.name in terms else 0.0
            assert settings[term.weight_key] == expected, (variant, term)
            # A score term's own settings are read only where it is on: they rerun only the students that use it.
            assert all((key in settings) == (term.name in terms) for key in term.settings), (variant, term)
        assert settings["online"] is False and settings["init_from_teacher"] is variant.startswith("init")
        assert ("blocks" in settings) is not sasrec  # SASRec has no blocks to align: its block map is not read
        # How the frozen teacher is loaded is the teacher_states rule's business: no student reruns for it.
        assert "teacher_quantization" not in settings
    assert ablation_target("all") == "student"  # the full variant is the student, never trained twice
    assert ablation_target("sasrec") == "sasrec"  # plain SASRec is the sasrec run itself
    assert student_distill(STUDENT_ONLINE, base)["online"] is True
    with pytest.raises(ValueError, match="unknown ablation variant 'ce_l2'"):
        ablation_target("ce_l2")


def test_slmrec_students_add_the_score_terms_named_by_kd_terms_and_start_as_configured():
    base = schema_defaults("distill")
    plain = student_distill("student_t8", base)
    assert plain["kd_logits_weight"] == plain["kd_rank_weight"] == 0.0 and "kd_temperature" not in plain
    assert plain["init_from_teacher"] is False
    combined = student_distill("student", {**base, "kd_terms": ["kd_rank"], "student_init": "teacher"})
    assert combined["kd_rank_weight"] == base["kd_rank_weight"] and combined["kd_rank_k"] == base["kd_rank_k"]
    assert combined["kd_logits_weight"] == 0.0 and combined["init_from_teacher"] is True
    sasrec = student_distill("sasrec_student_t2", base)
    assert sasrec["kd_logits_weight"] == base["kd_logits_weight"] and sasrec["kd_rank_weight"] == base["kd_rank_weight"]
    with pytest.raises(ValueError, match="student_online trains its teacher alongside"):
        student_distill(STUDENT_ONLINE, {**base, "student_init": "teacher"})


# --- the stages -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage_env(tmp_path_factory, backbone) -> SimpleNamespace:
    return distill_env(tmp_path_factory.mktemp("student"), backbone)


@pytest.fixture
def built(monkeypatch) -> list[Distiller]:
    """Every Distiller the student stage builds during a test, to inspect it afterwards."""
    distillers: list[Distiller] = []

    class Recording(Distiller):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            distillers.append(self)

    monkeypatch.setattr(student_stage, "Distiller", Recording)
    return distillers


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def student_samples(env: SimpleNamespace) -> NextItemDataset:
    """The samples the student stage trains on (`llm_config`'s max_len and targets_per_user)."""
    cfg = llm_config()
    return NextItemDataset(
        load_training_data(*data_inputs(env.data).values()).sequences, cfg["max_len"], cfg["targets_per_user"]
    )


def test_teacher_states_are_the_live_teachers_and_leave_it_bit_identical(stage_env):
    file_before = sha256(stage_env.teacher / "trainable.safetensors")
    states = TeacherStates.load(stage_env.states)
    samples = student_samples(stage_env)
    assert states.states.shape == (len(samples), 2, 64) and states.states.dtype == torch.float32
    assert states.teacher_layers == 4 and states.layers == [2, 4]
    assert states.samples == samples_digest(samples.input_ids, samples.labels)
    teacher = load_llmrec(stage_env.teacher, stage_env.table).eval()
    live = teacher_boundary_states(teacher, samples.input_ids[:7], [2, 4])
    assert torch.allclose(states.states[:7], live, atol=1e-5)  # bucketed and batched, the same states
    assert states.teacher_params == teacher.parameter_counts()
    assert sha256(stage_env.teacher / "trainable.safetensors") == file_before
    manifest = json.loads((stage_env.root / "states" / "manifest.json").read_text())
    assert manifest["stage"] == "teacher_states"
    assert str(stage_env.teacher / "trainable.safetensors") in manifest["inputs"]
    assert manifest["config"]["distill"]["blocks"] == 2


def test_teacher_states_rebuild_the_teacher_on_the_rules_backbone_input(stage_env, tmp_path):
    """The stage builds on its `backbone` input, not on the path recorded when the teacher was trained: a teacher
    whose recorded backbone is gone gives the same states on a copy of the backbone elsewhere."""
    moved = tmp_path / "elsewhere" / "backbone"
    shutil.copytree(stage_env.backbone, moved)
    teacher = tmp_path / "teacher"
    shutil.copytree(stage_env.teacher, teacher)
    config = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps({**config, "backbone": str(tmp_path / "gone")}))
    env = SimpleNamespace(**{**vars(stage_env), "backbone": str(moved), "root": tmp_path})
    states = run_states(env, teacher)
    assert torch.equal(TeacherStates.load(states).states, TeacherStates.load(stage_env.states).states)


def test_teacher_states_are_stored_at_the_precision_they_were_computed_in(stage_env):
    """Under bf16 autocast the cache holds bf16 states (half the size), its manifest says so, they stay close to
    the float32 ones, and a student learns from them."""
    path = run_states(stage_env, stage_env.teacher, "states_bf16", precision="bf16")
    states, full = TeacherStates.load(path), TeacherStates.load(stage_env.states)
    assert states.states.dtype == torch.bfloat16 and full.states.dtype == torch.float32
    manifest = json.loads((stage_env.root / "states_bf16" / "manifest.json").read_text())
    assert (manifest["precision"], manifest["states_dtype"]) == ("bf16", "bfloat16")
    assert (F.cosine_similarity(states.states.float(), full.states, dim=-1) > 0.99).all()
    run_student(stage_env, "student_bf16_states", distill_settings(), path)  # its row is checked as written


def test_states_refuse_other_samples_or_another_block_map(stage_env):
    states = TeacherStates.load(stage_env.states)
    samples = student_samples(stage_env)
    states.check(stage_env.states, samples.input_ids, samples.labels, [(2, 1), (4, 2)])
    with pytest.raises(ArtifactError, match=r"at teacher layers \[2, 4\], but the student's block map needs \[4\]"):
        states.check(stage_env.states, samples.input_ids, samples.labels, [(4, 2)])
    shorter = pad_left([row[row > 0].tolist()[1:] for row in samples.input_ids], 20)
    with pytest.raises(ArtifactError, match="computed for other training samples"):
        states.check(stage_env.states, shorter, samples.labels, [(2, 1), (4, 2)])


def test_state_alignment_is_zero_for_the_teacher_and_sums_to_the_students_loss_terms(stage_env):
    states = TeacherStates.load(stage_env.states)
    samples = student_samples(stage_env)
    teacher = load_llmrec(stage_env.teacher, stage_env.table)
    own = state_alignment(teacher, states, samples.input_ids, blocks=2, batch_size=16)
    assert [(b["student_layer"], b["teacher_layer"]) for b in own] == [(2, 2), (4, 4)]
    assert all(b["cos_distance"] < 1e-5 and b["l2_distance"] < 1e-3 for b in own)
    assert all(b["student_norm"] == pytest.approx(b["teacher_norm"], rel=1e-5) and b["teacher_norm"] > 0 for b in own)

    student = make_llmrec(stage_env.backbone, stage_env.table, layers=2, seed=2)
    blocks = state_alignment(student, states, samples.input_ids, blocks=2, batch_size=16)
    model = Distiller(student, None, 2, PAPER_WEIGHTS, teacher_layers=4).eval()
    with torch.no_grad():  # the whole training set as one batch: the loss terms' means over every sample
        terms = model(samples.input_ids, samples.labels, teacher_states=states.states)["terms"]
    assert sum(b["cos_distance"] for b in blocks) == pytest.approx(terms["loss_cos"].item(), rel=1e-4)
    assert sum(b["l2_distance"] for b in blocks) == pytest.approx(terms["loss_l2"].item(), rel=1e-4)
    assert all(b["cos_distance"] > 0.01 for b in blocks)
    with pytest.raises(DistillConfigError, match=r"teacher states are at layers \[2, 4\].*teacher layers \[4\]"):
        state_alignment(student, states, samples.input_ids, blocks=1, batch_size=16)


def test_offline_stage_reads_cached_states_and_never_loads_the_teacher(stage_env, built, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="slmrec")

    def no_teacher(*args, **kwargs):
        raise AssertionError("the student stage loaded a model from disk")

    monkeypatch.setattr(llmrec, "load_llmrec", no_teacher)
    metrics = run_student(stage_env, "student", distill_settings(), stage_env.states)

    (model,) = built
    assert not model.online and model.teacher is None
    out = stage_env.root / "student"
    log = pl.read_csv(out / "train_log.csv")
    assert {"loss", "loss_ce", "loss_cos", "loss_l2", "loss_ms", "mrr"} <= set(log.columns)
    assert log["step"].to_list() == [2, 4]
    assert metrics["model"] == "SLMRec 2←4" and metrics["layers"] == 2
    details = metrics["details"]
    assert [tuple(b) for b in details["boundaries"]] == [(2, 1), (4, 2)]
    assert details["teacher_params"]["total"] > metrics["params"]["total"]
    assert details["distill"]["online"] is False and details["teacher_states"] == "cached"
    # The saved student is a plain 2-layer LLMRec (no teacher, no adapters), loadable on its own.
    weights = load_file(str(out / "trainable.safetensors"))
    assert not any(k.startswith(("teacher.", "adapters.")) for k in weights)
    assert json.loads((out / "config.json").read_text())["layers"] == 2
    monkeypatch.undo()
    student = load_llmrec(out, stage_env.table)
    assert student.num_layers == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "student"
    assert str(stage_env.states) in manifest["inputs"]
    assert "SLMRec 2←4" in caplog.text and "cached teacher states" in caplog.text


def test_student_from_cached_states_equals_one_with_the_live_teacher_step_for_step(stage_env):
    """Same samples in the same batches: the cached path and the live frozen teacher train the same student."""
    samples = student_samples(stage_env)
    cached = TeacherStates.load(stage_env.states)
    samples.teacher_states = cached.states
    teacher = load_llmrec(stage_env.teacher, stage_env.table)

    def trained(live: bool) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
        student = make_llmrec(stage_env.backbone, stage_env.table, layers=2, seed=2)
        torch.manual_seed(0)
        if live:
            model = Distiller(student, teacher, 2, PAPER_WEIGHTS)
        else:
            model = Distiller(student, None, 2, PAPER_WEIGHTS, teacher_layers=cached.teacher_layers)
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
        batches = torch.utils.data.DataLoader(samples, batch_size=16, shuffle=False)
        history = []
        for batch in itertools.islice(batches, 4):
            if live:
                batch.pop("teacher_states")
            optimizer.zero_grad()
            out = model(**batch)
            out["loss"].backward()
            optimizer.step()
            history.append({k: float(v) for k, v in out["terms"].items()})
        return history, model.trainable_state_dict()

    live_history, live_weights = trained(live=True)
    cached_history, cached_weights = trained(live=False)
    assert len(live_history) == 4 and set(live_history[0]) == {"loss_ce", "loss_cos", "loss_l2", "loss_ms"}
    for step, (a, b) in enumerate(zip(live_history, cached_history, strict=True)):
        for term in a:
            assert a[term] == pytest.approx(b[term], rel=1e-4, abs=1e-5), (step, term)
    assert live_weights.keys() == cached_weights.keys()
    for name in live_weights:
        assert torch.allclose(live_weights[name], cached_weights[name], atol=1e-4), name


def test_ce_only_student_needs_no_teacher(stage_env):
    metrics = run_student(stage_env, "ablation/ce", distill_settings("ablation/ce"), None)
    log = pl.read_csv(stage_env.root / "ablation" / "ce" / "train_log.csv")
    assert {c for c in log.columns if c.startswith("loss")} == {"loss", "loss_ce"}
    assert metrics["details"]["teacher_params"] is None and metrics["model"] == "SLMRec_ce 2"
    assert all(metrics["details"]["distill"][t.weight_key] == 0.0 for t in LOSS_TERMS)


def test_offline_with_alignment_terms_requires_the_teacher_states(stage_env):
    with pytest.raises(ValueError, match="needs the teacher_states rule's artifact"):
        run_student(stage_env, "missing", distill_settings(), None)


def test_online_stage_logs_the_teacher_loss(stage_env):
    metrics = run_student(stage_env, "student_online", distill_settings("student_online"), None)
    log = pl.read_csv(stage_env.root / "student_online" / "train_log.csv")
    assert {"loss_ce", "loss_teacher", "loss_cos", "loss_l2", "loss_ms"} <= set(log.columns)
    assert metrics["details"]["distill"]["online"] is True and metrics["model"] == "SLMRec_online 2←4"
    assert metrics["details"]["distill"]["online_teacher_gradients"] is True  # the authors' way, by default
    assert metrics["details"]["teacher_params"]["trainable"] > 0 and metrics["details"]["teacher_states"] == "live"
    weights = load_file(str(stage_env.root / "student_online" / "trainable.safetensors"))
    assert not any(k.startswith("teacher.") for k in weights)


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_teacher_states_from_a_quantized_teacher(stage_env, quantization):
    path = run_states(stage_env, stage_env.teacher, f"states_{quantization}", teacher_quantization=quantization)
    states, full = TeacherStates.load(path), TeacherStates.load(stage_env.states)
    assert torch.isfinite(states.states).all() and not torch.equal(states.states, full.states)
    assert (F.cosine_similarity(states.states, full.states, dim=-1) > 0.9).all()
    run_student(stage_env, f"student_{quantization}", distill_settings(), path)
    log = pl.read_csv(stage_env.root / f"student_{quantization}" / "train_log.csv")
    assert log["loss_cos"].is_finite().all() and log["loss_l2"].is_finite().all()


# --- resume ---------------------------------------------------------------------------------------


def run_killed(env, monkeypatch, target: str, states: Path, step: int = 3) -> None:
    """Run the offline student until it is killed after optimizer step `step` (a checkpoint exists at 2)."""

    kill_at(monkeypatch, step)
    with pytest.raises(Killed):
        run_student(env, target, distill_settings(), states)
    monkeypatch.setattr(training, "TrainLog", TrainLog)
    assert (env.root / "checkpoints" / target / "checkpoint-2").is_dir()


def test_killed_student_resumes_with_the_same_teacher(stage_env, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="slmrec")
    run_killed(stage_env, monkeypatch, "resumed", stage_env.states)
    caplog.clear()
    metrics = run_student(stage_env, "resumed", distill_settings(), stage_env.states)
    assert "resuming from" in caplog.text and "starting afresh" not in caplog.text
    assert pl.read_csv(stage_env.root / "resumed" / "train_log.csv")["step"].to_list() == [2, 4]
    assert metrics["train_seconds"] > 0


def test_killed_student_starts_afresh_when_its_teacher_changed(stage_env, monkeypatch, caplog, backbone):
    """A retrained teacher is another run of the student, even with every setting the same."""
    caplog.set_level(logging.INFO, logger="slmrec")
    run_killed(stage_env, monkeypatch, "new_teacher", stage_env.states)
    retrained = stage_env.root / "retrained_teacher"
    other = make_llmrec(backbone, stage_env.table, layers=4, seed=7)
    other.save_artifacts({name: str(retrained / file) for name, file in LLM_OUTPUTS.items()})
    states = run_states(stage_env, retrained, "retrained_states")
    caplog.clear()
    run_student(stage_env, "new_teacher", distill_settings(), states)
    assert "starting afresh" in caplog.text and "input teacher_states" in caplog.text
    assert "resuming from" not in caplog.text
