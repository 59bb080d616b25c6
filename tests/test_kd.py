"""Beyond the paper: distillation of the teacher's scores (logits KD, rank KD), the student started from its
teacher, and SASRec as a student, all reading the teacher's cached states instead of the teacher."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from helpers_data import (
    data_inputs,
    llm_config,
    ranking_metrics,
    sasrec_config,
    sasrec_outputs,
    sasrec_params,
    stage_call,
)
from helpers_distill import distill_env, llm_settings, make_llmrec, run_student
from safetensors.torch import load_file

from slmrec.config import schema_defaults
from slmrec.data.samples import NextItemDataset, load_training_data, window_rows, window_teacher_index
from slmrec.errors import ArtifactError
from slmrec.models import llmrec
from slmrec.models.distill import (
    DistillConfigError,
    Distiller,
    DistillWeights,
    TeacherHead,
    TeacherStates,
    logits_kd,
    rank_kd,
    rank_weights,
    score_terms,
    start_from_teacher,
)
from slmrec.models.llmrec import build_llmrec, load_llmrec
from slmrec.models.sasrec import SASRec, SASRecConfig
from slmrec.models.sasrec_student import SASRecDistiller
from slmrec.stages import sasrec as sasrec_stage
from slmrec.stages import sasrec_student as sasrec_student_stage
from slmrec.targets import SCORE_TERMS, ablation_target, student_distill

DISTILL = {**schema_defaults("distill"), "blocks": 2}
KD_ONLY = DistillWeights(0.0, 0.0, 0.0, kd_logits=1.0, kd_rank=0.8)
OFF = DistillWeights(0.0, 0.0, 0.0, 0.0, 0.0)
GAMMAS = (0.3, 0.5, 0.1)


@pytest.fixture(scope="module")
def env(tmp_path_factory, backbone) -> SimpleNamespace:
    return distill_env(tmp_path_factory.mktemp("kd"), backbone)


def teacher_samples(env: SimpleNamespace) -> NextItemDataset:
    """The samples the teacher's states were cached for (the students' max_len and targets_per_user)."""
    cfg = llm_config()
    sequences = load_training_data(*data_inputs(env.data).values()).sequences
    return NextItemDataset(sequences, cfg["max_len"], cfg["targets_per_user"])


def head(env: SimpleNamespace) -> TeacherHead:
    return TeacherHead.from_file(env.teacher / "trainable.safetensors", env.table)


# --- the teacher's scores from its cache ----------------------------------------------------------


def test_teacher_scores_from_the_cache_equal_the_live_teachers(env):
    states = TeacherStates.load(env.states)
    samples = teacher_samples(env)
    teacher = load_llmrec(env.teacher, env.table, backbone=env.backbone).eval()
    with torch.no_grad():
        live = teacher.scores(teacher(samples.input_ids)["user"])  # [N, items + 1]
    cached = head(env)(states.final)
    assert cached.shape == live.shape == (len(samples), env.data.num_items + 1)
    assert torch.isinf(cached[:, 0]).all() and torch.isinf(live[:, 0]).all()  # the padding item is never scored
    assert torch.allclose(cached[:, 1:], live[:, 1:], atol=1e-4)


def test_teacher_head_refuses_a_file_that_is_not_an_llm_recommenders_weights(env, tmp_path):
    with pytest.raises(ArtifactError, match="holds no"):
        TeacherHead.from_file(env.items, env.table)  # SASRec's item table: no output projection
    with pytest.raises(ArtifactError, match="projects onto 16 dimensions, but the item table has 8"):
        TeacherHead.from_file(env.teacher / "trainable.safetensors", env.table[:, :8])


# --- the terms --------------------------------------------------------------------------------------


def scores(seed: int, rows: int = 5, items: int = 30) -> torch.Tensor:
    logits = torch.randn(rows, items + 1, generator=torch.Generator().manual_seed(seed)) * 3
    logits[:, 0] = float("-inf")
    return logits


def test_logits_kd_is_the_tempered_kl_times_t_squared():
    student, teacher = scores(1), scores(2)
    for t in (1.0, 2.0, 4.0):
        p_t = torch.softmax(teacher[:, 1:] / t, -1)
        expected = (p_t * (p_t.log() - torch.log_softmax(student[:, 1:] / t, -1))).sum(1).mean() * t * t
        assert torch.allclose(logits_kd(student, teacher, t), expected, atol=1e-5)
    assert logits_kd(teacher, teacher, 2.0).abs() < 1e-6  # matching the teacher costs nothing


def test_rank_weights_mix_position_confidence_and_agreement():
    teacher = torch.full((1, 7), -5.0)
    teacher[0, 0] = float("-inf")
    teacher[0, [3, 5, 1]] = torch.tensor([4.0, 3.0, 1.0])  # the teacher's top 3: items 3, 5, 1
    student = torch.zeros(1, 7)
    student[0, [1, 2, 4]] = 1.0  # the student's own top 3 holds item 1 only
    items, weights = rank_weights(student, teacher, 3, GAMMAS)
    assert items.tolist() == [[3, 5, 1]]
    w_rank = torch.softmax(-torch.arange(1.0, 4.0), 0)
    w_conf = torch.softmax(torch.tensor([4.0, 3.0, 1.0]), 0)
    w_agree = torch.tensor([0.0, 0.0, 1.0])
    mixed = 0.3 * w_rank + 0.5 * w_conf + 0.1 * w_agree
    assert torch.allclose(weights[0], mixed / mixed.sum(), atol=1e-6)
    assert torch.allclose(weights.sum(1), torch.ones(1))
    # Position alone: the teacher's first item weighs most, falling as exp(-rank).
    assert torch.allclose(rank_weights(student, teacher, 3, (1.0, 0.0, 0.0))[1][0], w_rank, atol=1e-6)


def test_rank_kd_is_the_weighted_cross_entropy_of_the_teachers_top_k():
    student, teacher = scores(3), scores(4)
    items, weights = rank_weights(student, teacher, 5, GAMMAS)
    nll = -torch.log_softmax(student, -1).gather(1, items)
    assert torch.allclose(rank_kd(student, teacher, 5, GAMMAS), (weights * nll).sum(1).mean(), atol=1e-6)
    with pytest.raises(DistillConfigError, match="all 0"):
        score_terms(student, teacher, KD_ONLY, {"kd_temperature": 2.0, "kd_rank_k": 5} | zero_gammas())


def zero_gammas() -> dict[str, float]:
    return {f"kd_rank_gamma_{g}": 0.0 for g in ("position", "confidence", "consistency")}


# --- the LLM student --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cached(env) -> SimpleNamespace:
    """A 2-layer student, the cached states of the 4-layer teacher for a batch of its samples, and the head."""
    samples = teacher_samples(env)
    states = TeacherStates.load(env.states)
    student = make_llmrec(env.backbone, env.table, layers=2, seed=2)
    return SimpleNamespace(
        student=student, ids=samples.input_ids[:16], labels=samples.labels[:16], states=states.states[:16]
    )


def kd_distiller(env, cached, weights: DistillWeights) -> Distiller:
    torch.manual_seed(0)
    return Distiller(
        copy.deepcopy(cached.student), None, 2, weights, teacher_layers=4, head=head(env), settings=DISTILL
    )


@pytest.mark.parametrize("term", [t.name for t in SCORE_TERMS])
def test_a_score_term_at_zero_weight_is_cross_entropy_exactly(env, cached, term):
    on = kd_distiller(env, cached, DistillWeights(**{**vars(OFF), term: 1.0})).eval()
    off = kd_distiller(env, cached, OFF).eval()
    with torch.no_grad():
        with_term = on(cached.ids, cached.labels, teacher_states=cached.states)
        without = off(cached.ids, cached.labels, teacher_states=cached.states)
        plain = cached.student.eval()(cached.ids, cached.labels)["loss"]
    assert set(without["terms"]) == {"loss_ce"} and torch.equal(without["loss"], plain)
    log_key = {t.name: t.log_key for t in SCORE_TERMS}[term]
    assert set(with_term["terms"]) == {"loss_ce", log_key} and with_term["terms"][log_key] > 0
    assert torch.equal(with_term["terms"]["loss_ce"], plain)


def test_score_terms_train_only_the_student(env, cached):
    model = kd_distiller(env, cached, KD_ONLY)
    frozen = {name: b.clone() for name, b in model.head.named_buffers()}
    student_before = {k: v.clone() for k, v in model.student.trainable_state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        out = model(cached.ids, cached.labels, teacher_states=cached.states)
        out["loss"].backward()
        optimizer.step()
    assert all(torch.equal(b, frozen[name]) for name, b in model.head.named_buffers())  # the teacher's head
    changed = model.student.trainable_state_dict()
    assert any(not torch.equal(changed[k], student_before[k]) for k in changed)  # the student learned
    assert not any(key.startswith("head.") for key in model.state_dict())  # nor is the head ever saved


def test_score_terms_never_train_an_online_teacher(env, cached):
    """Online, the teacher trains alongside on its own CE; the score terms read its scores as fixed targets, so its
    gradients are the same with them as without."""

    def teacher_grads(weights: DistillWeights) -> dict[str, torch.Tensor]:
        teacher = make_llmrec(env.backbone, env.table, layers=4, seed=1)
        model = Distiller(
            copy.deepcopy(cached.student), teacher, 2, weights, online=True, teacher_gradients=False, settings=DISTILL
        ).train()
        model(cached.ids, cached.labels)["loss"].backward()
        return {n: p.grad.clone() for n, p in teacher.named_parameters() if p.grad is not None}

    with_kd, without = teacher_grads(KD_ONLY), teacher_grads(OFF)
    assert with_kd and with_kd.keys() == without.keys()
    assert all(torch.equal(with_kd[n], without[n]) for n in with_kd)


def test_the_live_teachers_scores_equal_the_cached_ones(env, cached):
    """Offline without a cache, the score terms read the live frozen teacher: the same values as from its cache."""
    teacher = load_llmrec(env.teacher, env.table, backbone=env.backbone)
    live = Distiller(copy.deepcopy(cached.student), teacher, 2, KD_ONLY, settings=DISTILL).eval()
    from_cache = kd_distiller(env, cached, KD_ONLY).eval()
    with torch.no_grad():
        a = live(cached.ids, cached.labels)["terms"]
        b = from_cache(cached.ids, cached.labels, teacher_states=cached.states)["terms"]
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


# --- a student that starts where its teacher ends -------------------------------------------------


def test_a_student_started_from_its_teacher_is_the_teacher_read_out_at_its_depth(env):
    teacher = load_llmrec(env.teacher, env.table, backbone=env.backbone).eval()
    student = build_llmrec(llm_settings(env.backbone, env.table, 2), env.table, seed=5).eval()
    copied = start_from_teacher(student, load_file(env.teacher / "trainable.safetensors"), "teacher")
    assert copied == len(student.trainable_state_dict())
    ids = teacher_samples(env).input_ids[:16]
    with torch.no_grad(), teacher.truncated(2):
        direct = teacher(ids)["user"]  # the teacher after its first 2 layers, through its norm and projection
    with torch.no_grad():
        assert torch.allclose(student(ids)["user"], direct, atol=1e-5)


def test_starting_from_a_teacher_with_other_lora_settings_is_a_clear_error(env):
    config = llm_settings(env.backbone, env.table, 2)
    config.lora.r = 8  # the teacher was trained with r = 4
    student = build_llmrec(config, env.table, seed=5)
    with pytest.raises(DistillConfigError, match="LoRA settings .* must agree"):
        start_from_teacher(student, load_file(env.teacher / "trainable.safetensors"), "teacher")


@pytest.mark.parametrize(
    ("target", "changes", "name"),
    [
        (ablation_target("init_ce"), {}, "SLMRec_init_ce 2←4"),
        (ablation_target("init_logits"), {}, "SLMRec_init_logits 2←4"),
        (ablation_target("init_rank"), {}, "SLMRec_init_rank 2←4"),
        ("student", {"student_init": "teacher"}, "SLMRec 2←4"),  # with the hidden-state terms
    ],
)
def test_the_teachers_initialisation_runs_with_each_family(env, caplog, target, changes, name):
    distill = student_distill(target, {**DISTILL, **changes})
    assert distill["init_from_teacher"] is True
    with caplog.at_level("INFO"):
        row = run_student(env, target, distill, env.states)
    assert row["model"] == name and row["details"]["init_from_teacher"] is True
    assert "started from the teacher's trained weights" in caplog.text


# --- SASRec as a student ----------------------------------------------------------------------------


def test_window_positions_meet_the_teachers_sample_with_the_same_history_and_target(env):
    sequences = load_training_data(*data_inputs(env.data).values()).sequences
    samples = teacher_samples(env)
    max_len = 6  # shorter than most histories: several windows per user
    rows, dataset = window_rows(sequences, max_len)
    index = window_teacher_index(rows, samples.origins, max_len)
    taught = (index >= 0).nonzero().tolist()
    assert len(taught) == len(samples)  # each teacher sample is some window position, exactly once
    assert sorted(index[index >= 0].tolist()) == list(range(len(samples)))
    for r, col in taught:
        i = int(index[r, col])
        assert int(dataset.labels[r, col]) == int(samples.labels[i])
        history = [item for item in dataset.input_ids[r, : col + 1].tolist() if item]
        teacher_history = [item for item in samples.input_ids[i].tolist() if item]
        overlap = min(len(history), len(teacher_history))
        assert history[-overlap:] == teacher_history[-overlap:]


def sasrec_student_call(env: SimpleNamespace, target: str, distill: dict[str, Any], out: Path):
    cfg = {k: v for k, v in sasrec_config().items() if k != "authors_protocol"}
    samples = {k: v for k, v in llm_config().items() if k in ("max_len", "targets_per_user")}
    params = {**sasrec_params(env.root / "checkpoints" / target, cfg), "target": target}
    params = {k: v for k, v in params.items() if k != "authors_protocol"} | {"samples": samples, "distill": distill}
    inputs = {**data_inputs(env.data), "item_embeddings": env.items}
    if distill["kd_logits_weight"] or distill["kd_rank_weight"]:
        inputs |= {"teacher_states": env.states, "teacher_weights": env.teacher / "trainable.safetensors"}
    return stage_call("sasrec_student", inputs, sasrec_outputs(out), params)


def test_sasrec_student_with_zero_weights_is_plain_sasrec_to_the_bit(env, tmp_path):
    sasrec_stage.run(
        stage_call("sasrec", data_inputs(env.data), sasrec_outputs(tmp_path / "plain"), plain_params(env, tmp_path))
    )
    zero = student_distill("sasrec_student", {**DISTILL, "kd_logits_weight": 0.0, "kd_rank_weight": 0.0})
    sasrec_student_stage.run(sasrec_student_call(env, "sasrec_student", zero, tmp_path / "student"))
    plain = load_file(tmp_path / "plain" / "model.safetensors")
    student = load_file(tmp_path / "student" / "model.safetensors")
    assert plain.keys() == student.keys() and all(torch.equal(plain[k], student[k]) for k in plain)
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("plain", "student"))
    assert all(ranking_metrics(a[split]) == ranking_metrics(b[split]) for split in ("valid", "test"))
    assert b["model"] == "SASRec"


def plain_params(env: SimpleNamespace, tmp_path: Path) -> dict[str, Any]:
    return sasrec_params(tmp_path / "checkpoints" / "plain", sasrec_config())


def test_sasrec_student_learns_the_teachers_scores_without_ever_loading_the_llm(env, tmp_path, monkeypatch, caplog):
    def no_llm(*args, **kwargs):
        raise AssertionError("the SASRec student loaded the LLM")

    monkeypatch.setattr(llmrec, "load_backbone", no_llm)
    monkeypatch.setattr(llmrec, "build_llmrec", no_llm)
    distill = student_distill("sasrec_student", DISTILL)
    with caplog.at_level("INFO"):
        sasrec_student_stage.run(sasrec_student_call(env, "sasrec_student", distill, tmp_path / "student"))
    row = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert row["model"] == "SASRec ← E4SRec_4 (logits KD + rank KD)"
    assert "the teacher's scores reach" in caplog.text
    log = (tmp_path / "student" / "train_log.csv").read_text().splitlines()[0]
    assert "loss_kd_logits" in log and "loss_kd_rank" in log


def test_sasrec_distiller_trains_only_sasrec(env):
    samples = teacher_samples(env)
    sequences = load_training_data(*data_inputs(env.data).values()).sequences
    rows, dataset = window_rows(sequences, 20)
    dataset.teacher_index = window_teacher_index(rows, samples.origins, 20)
    torch.manual_seed(0)
    sasrec = SASRec(SASRecConfig(env.data.num_items, 32, 1, 1, 0.0, 20))
    final = TeacherStates.load(env.states).final.float()
    model = SASRecDistiller(sasrec, KD_ONLY, DISTILL, head(env), final)
    batch = {k: torch.stack([dataset[i][k] for i in range(32)]) for k in ("input_ids", "labels", "teacher_index")}
    out = model(**batch)
    out["loss"].backward()
    assert set(out["terms"]) == {"loss_ce", "loss_kd_logits", "loss_kd_rank"}
    assert sasrec.item_embeddings.weight.grad is not None and sasrec.blocks[0].qkv.weight.grad is not None
    assert not model.final_states.requires_grad and list(model.head.parameters()) == []
    assert set(model.state_dict()) == {f"student.{k}" for k in sasrec.state_dict()}  # no teacher tensor is saved


def test_sasrec_student_refuses_states_cached_for_other_samples(env, tmp_path):
    distill = student_distill("sasrec_student", DISTILL)
    call = sasrec_student_call(env, "sasrec_student", distill, tmp_path / "student")
    call.params["samples"] = {**call.params["samples"], "targets_per_user": 3}
    with pytest.raises(ArtifactError, match="other training samples"):
        sasrec_student_stage.run(call)
