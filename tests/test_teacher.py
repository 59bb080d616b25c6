"""The `teacher` stage: Trainer-based training of the LLM recommender, its artifacts, resume, and 2 processes."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import polars as pl
import pytest
import torch
from helpers_data import (
    LLM_OUTPUTS,
    backbone_settings,
    data_inputs,
    llm_config,
    llm_outputs,
    make_backbone,
    make_dataset,
    prompt_settings,
    stage_call,
    write_item_table,
)
from helpers_training import Killed, kill_at, recording_log
from safetensors.torch import load_file

from slmrec import training
from slmrec.data.samples import NextItemDataset, load_eval_splits
from slmrec.evaluate import evaluate
from slmrec.launch import launch
from slmrec.models.llmrec import load_llmrec
from slmrec.stages import teacher
from slmrec.training import batch_plan, step_arguments

MAX_LEN = 20
STEPS = 8  # 60 users, one target each, batch 16: two epochs of 4 steps
EVAL = {"full_ranking": False}


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> SimpleNamespace:
    """Dataset (60 users, stored 20 negatives), a random item table and the tiny backbone."""
    root = tmp_path_factory.mktemp("teacher")
    data = make_dataset(root / "data", users=60, items=120, num_negatives=20)
    items = write_item_table(root / "item_embeddings.safetensors", data.num_items, dim=16)
    return SimpleNamespace(root=root, data=data, items=items, backbone=make_backbone(root / "backbone"))


def section(**overrides) -> dict:
    """The `teacher` params of the rule: the section without `layers` (which comes from the target)."""
    return {k: v for k, v in llm_config(**overrides).items() if k != "layers"}


def teacher_call(env: SimpleNamespace, name: str, cfg: dict | None = None, layers: int = 2, **changes):
    """The call the `teacher` rule makes for target `name`; `changes` replace whole params."""
    cfg = cfg or llm_config(max_steps=STEPS)
    params = {
        "target": name,
        "teacher": {k: v for k, v in cfg.items() if k != "layers"},
        "layers": layers,
        "backbone": backbone_settings(),
        "prompt": prompt_settings(),
        "evaluate": EVAL,
        "checkpoints": str(env.root / "checkpoints" / name),
        **changes,
    }
    inputs = {**data_inputs(env.data), "item_embeddings": env.items, "backbone": env.backbone}
    return stage_call("teacher", inputs, llm_outputs(env.root / name), params)


def run_teacher(env: SimpleNamespace, name: str, cfg: dict | None = None, layers: int = 2, **changes) -> dict | None:
    row = teacher.run(teacher_call(env, name, cfg, layers, **changes))
    return json.loads((env.root / name / "metrics.json").read_text()) if row is not None else None


@pytest.fixture(scope="module")
def single(env) -> dict:
    """One uninterrupted single-process run (8 steps, validate and checkpoint every 2)."""
    return run_teacher(env, "single")


# --- training samples and arguments ----------------------------------------------------------------


def test_next_item_dataset_targets_per_user():
    sequences = [[1, 2, 3, 4, 5], [6, 7], [8]]
    one = NextItemDataset(sequences, max_len=3, targets_per_user=1)
    assert len(one) == 2  # [8] has nothing to predict
    assert one.labels.tolist() == [5, 7]
    assert one.input_ids.tolist() == [[2, 3, 4], [0, 0, 6]]

    three = NextItemDataset(sequences, max_len=3, targets_per_user=3)
    assert three.labels.tolist() == [3, 4, 5, 7]
    assert three.input_ids.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [0, 0, 6]]
    assert set(three[1]) == {"input_ids", "labels"} and three[1]["labels"].item() == 4

    many = NextItemDataset(sequences, max_len=10, targets_per_user=50)  # capped by the sequence
    assert many.labels.tolist() == [2, 3, 4, 5, 7]
    with pytest.raises(ValueError, match="no training samples"):
        NextItemDataset([[1], [2]], max_len=3, targets_per_user=1)


def test_training_arguments_from_config(tmp_path):
    cfg = llm_config(batch_size=16, learning_rate=0.003, warmup_steps=3, max_steps=7, eval_steps=5)
    args = step_arguments(cfg, str(tmp_path), "float32", 0)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (16, 1)
    assert args.learning_rate == 0.003 and args.warmup_steps == 3 and args.max_steps == 7
    assert args.lr_scheduler_type == "cosine"
    assert args.eval_steps == args.save_steps == 5
    assert args.metric_for_best_model == "mrr" and args.greater_is_better and args.load_best_model_at_end
    # The per-device micro-batch is a runtime choice: accumulation keeps the effective batch.
    args = step_arguments(cfg, str(tmp_path), "float32", per_device_batch_size=4)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 4)
    with pytest.raises(ValueError, match="not a multiple"):
        step_arguments(cfg, str(tmp_path), "float32", per_device_batch_size=3)


def test_batch_plan_keeps_the_effective_batch():
    assert batch_plan(16, 0, 2) == (8, 1)  # two processes share the batch
    assert batch_plan(256, 16, 4) == (16, 4)  # 16 x 4 devices x 4 accumulation steps
    assert batch_plan(64, 0, 1) == (64, 1)
    with pytest.raises(ValueError, match="not a multiple"):
        batch_plan(16, 3, 1)


# --- the stage --------------------------------------------------------------------------------------


def test_stage_writes_its_artifacts(env, single):
    out = env.root / "single"
    assert {p.name for p in out.iterdir()} == set(LLM_OUTPUTS.values())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(single))
    assert metrics["model"] == "E4SRec_2" and metrics["layers"] == 2
    params = metrics["params"]
    assert 0 < params["trainable"] < params["total"]
    assert params["inference"] < params["total"]  # LoRA merges into the base weights
    assert metrics["train_seconds"] > 0 and metrics["inference_seconds"] > 0

    log = pl.read_csv(out / "train_log.csv")
    assert log["step"].to_list() == [2, 4, 6, 8]
    assert {"loss", "mrr", "hr@10", "seconds"} <= set(log.columns)
    # The selected model is the best validation MRR, and it is what was saved and scored.
    best = log.filter(pl.col("mrr") == log["mrr"].max())["step"][0]
    assert metrics["best_step"] == best
    assert metrics["best_valid_mrr"] == pytest.approx(log["mrr"].max())
    assert metrics["valid"]["MRR"] == pytest.approx(metrics["best_valid_mrr"])

    weights = load_file(str(out / "trainable.safetensors"))
    assert any("lora_A" in k for k in weights) and "input_proj.weight" in weights
    assert sum(v.numel() for v in weights.values()) == params["trainable"]
    table = load_file(env.items)["item_embeddings"]
    model = load_llmrec(out, table).eval()
    split = load_eval_splits(env.data.splits, env.data.negatives, env.data.num_items)["test"]
    again = evaluate(model.user_vectors, model.item_table, split, MAX_LEN, 64, full_ranking=False)
    assert again["MRR"] == pytest.approx(metrics["test"]["MRR"], abs=1e-6)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "teacher"
    assert manifest["config"]["layers"] == 2 and manifest["config"]["teacher"]["max_steps"] == STEPS
    assert manifest["config"]["prompt"] == prompt_settings() and manifest["config"]["evaluate"] == EVAL
    assert set(manifest["inputs"]) == {env.data.splits, env.data.negatives, env.data.stats, env.items}
    assert list(manifest["input_directories"]) == [env.backbone]
    # A finished run leaves no checkpoints behind, so nothing can ever resume it.
    assert not (env.root / "checkpoints" / "single").exists()
    assert str(out / "trainable.safetensors") in manifest["outputs"]


def test_layers_argument_overrides_config(env):
    """`teacher_l{n}` targets pass `layers`, which wins over `teacher.layers`."""
    metrics = run_teacher(env, "teacher_l1", llm_config(max_steps=2, eval_steps=2), layers=1)
    assert metrics["model"] == "E4SRec_1" and metrics["layers"] == 1
    assert json.loads((env.root / "teacher_l1" / "config.json").read_text())["layers"] == 1


def kill_after(env, monkeypatch, name: str, step: int, **changes) -> list[int]:
    """Run the teacher until it is killed after `step`; return the steps it ran."""
    steps: list[int] = []
    kill_at(monkeypatch, step, steps)
    with pytest.raises(Killed):
        run_teacher(env, name, **changes)
    return steps


def rerun(env, monkeypatch, name: str, **changes) -> tuple[list[int], dict]:
    """Run the teacher to the end; return the steps it ran and its metrics."""
    steps: list[int] = []
    monkeypatch.setattr(training, "TrainLog", recording_log(steps))
    return steps, run_teacher(env, name, **changes)


def test_resume_after_interruption(env, single, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="slmrec")
    checkpoints = env.root / "checkpoints" / "resumed"
    assert kill_after(env, monkeypatch, "resumed", 5) == [1, 2, 3, 4, 5]
    assert {"checkpoint-2", "checkpoint-4"} <= {p.name for p in checkpoints.iterdir()}
    assert not (env.root / "resumed" / "metrics.json").exists()
    before_kill = json.loads((checkpoints / "checkpoint-4" / training.TrainLog.CLOCK).read_text())["elapsed"]

    caplog.clear()
    second, metrics = rerun(env, monkeypatch, "resumed")
    assert f"resuming from {checkpoints / 'checkpoint-4'}" in caplog.text
    assert "starting afresh" not in caplog.text
    assert second == [5, 6, 7, 8]
    # The training time counts the run before the kill too (up to the checkpoint it resumed from).
    assert metrics["train_seconds"] > before_kill
    # The log covers the whole run, the evaluations before the kill included, as if never interrupted.
    resumed_log = pl.read_csv(env.root / "resumed" / "train_log.csv")
    single_log = pl.read_csv(env.root / "single" / "train_log.csv")
    assert resumed_log["step"].to_list() == single_log["step"].to_list() == [2, 4, 6, 8]
    assert resumed_log["seconds"].is_nan().sum() == 0
    assert resumed_log["mrr"].to_list() == pytest.approx(single_log["mrr"].to_list(), abs=1e-6)
    assert resumed_log["loss"].to_list() == pytest.approx(single_log["loss"].to_list(), abs=1e-5)
    # Resuming restores optimizer, scheduler and data order: the result is the uninterrupted run's.
    assert metrics["best_step"] == single["best_step"]
    assert metrics["test"]["MRR"] == pytest.approx(single["test"]["MRR"], abs=1e-6)
    resumed = load_file(str(env.root / "resumed" / "trainable.safetensors"))
    reference = load_file(str(env.root / "single" / "trainable.safetensors"))
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.allclose(resumed[key], reference[key], atol=1e-6), key
    assert not checkpoints.exists()


@pytest.mark.parametrize(
    ("changed", "logged"),
    [
        ({"teacher": section(max_steps=4, learning_rate=0.005)}, "teacher.learning_rate"),
        ({"prompt": {"prefix": "Predict the next item:", "suffix": "\nAnswer:"}}, "prompt.prefix, prompt.suffix"),
        ({"teacher": section(max_steps=4, max_len=10)}, "teacher.max_len"),
        ({"backbone": backbone_settings(dtype="bfloat16")}, "backbone.dtype"),
    ],
    ids=["learning_rate", "prompt", "max_len", "backbone"],
)
def test_changed_settings_start_afresh(env, monkeypatch, caplog, changed, logged):
    caplog.set_level(logging.INFO, logger="slmrec")
    name = f"changed_{'_'.join(changed)}"
    checkpoints = env.root / "checkpoints" / name
    base = {"teacher": section(max_steps=4)}
    kill_after(env, monkeypatch, name, 3, **base)
    assert (checkpoints / "checkpoint-2").is_dir()

    caplog.clear()
    second, _ = rerun(env, monkeypatch, name, **{**base, **changed})
    assert "starting afresh" in caplog.text and "resuming from" not in caplog.text
    assert logged in caplog.text
    assert second == [1, 2, 3, 4]


def test_changed_input_starts_afresh(env, monkeypatch, caplog, tmp_path):
    """Another item table (a retrained SASRec) is another run, even with every setting the same."""
    caplog.set_level(logging.INFO, logger="slmrec")
    kill_after(env, monkeypatch, "new_items", 3, teacher=section(max_steps=4))
    other = write_item_table(tmp_path / "item_embeddings.safetensors", env.data.num_items, dim=16, seed=1)
    steps: list[int] = []
    monkeypatch.setattr(training, "TrainLog", recording_log(steps))
    call = teacher_call(env, "new_items", teacher=section(max_steps=4))
    call.input["item_embeddings"] = other
    teacher.run(call)
    assert "changed since they were made: input item_embeddings" in caplog.text
    assert steps == [1, 2, 3, 4]


def test_a_finished_run_is_never_resumed(env, monkeypatch, caplog):
    """Checkpoints a finished run left (its outputs written, killed before it removed them) are discarded, not
    resumed."""
    caplog.set_level(logging.INFO, logger="slmrec")
    kill_after(env, monkeypatch, "finished", 4, teacher=section(max_steps=4))
    (env.root / "checkpoints" / "finished" / training.FINISHED_FILE).touch()
    steps, _ = rerun(env, monkeypatch, "finished", teacher=section(max_steps=4))
    assert "they belong to a run that finished" in caplog.text
    assert steps == [1, 2, 3, 4]


def test_two_processes_match_one(env, single, tmp_path):
    """torchrun, 2 CPU workers over gloo: same outputs and shapes, same loss trend as one process."""
    out = env.root / "ddp"
    log_path = tmp_path / "ddp.log"
    call = teacher_call(env, "ddp")
    assert launch(call, processes=2, log_path=str(log_path)) is None
    text = log_path.read_text()
    assert text.count("E4SRec_2 test") == 1  # only rank 0 writes the artifacts

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics.keys() == single.keys()
    assert metrics["params"] == single["params"]
    weights = load_file(str(out / "trainable.safetensors"))
    reference = load_file(str(env.root / "single" / "trainable.safetensors"))
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in reference.items()}

    ddp_log = pl.read_csv(out / "train_log.csv")
    single_log = pl.read_csv(env.root / "single" / "train_log.csv")
    assert ddp_log["step"].to_list() == single_log["step"].to_list() == [2, 4, 6, 8]
    # The data is sharded: 2 workers x 8 samples per step cover the 60 samples in 4 steps, like one process.
    assert ddp_log["epoch"].to_list() == single_log["epoch"].to_list() == [0.5, 1.0, 1.5, 2.0]
    for log in (ddp_log, single_log):
        assert log["loss"][-1] < log["loss"][0]
    # Same effective batch (2 x 8 vs 16) and schedule: the losses stay close, not equal.
    assert (ddp_log["loss"] - single_log["loss"]).abs().max() < 0.5 * single_log["loss"][0]
