"""`backbone.precision`: `auto` follows the device's bf16 capability (mocked both ways), bf16 autocast is really on
inside a training step, and bf16 evaluation stays close to float32 (the tolerance is stated below)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_data import backbone_settings, llm_config, prompt_settings
from test_teacher import env, run_teacher  # noqa: F401  (env: the module fixture run_teacher needs)

from slmrec import precision
from slmrec.data.samples import load_eval_splits
from slmrec.evaluate import evaluate
from slmrec.models.llmrec import LLMRec, LLMRecConfig, build_llmrec

# bf16 keeps 8 significant bits. Measured on the tiny preset (2 layers, 58 test users): user vectors from a bf16
# forward have cosine > 0.99995 with float32's, and the sampled metrics move by at most 0.06 points. The tolerance:
# cosine 0.9995, and 2 points, a little more than one user of 58 moving across a cut-off (1.7 points of HR@k).
MIN_COSINE = 0.9995
MAX_METRIC_POINTS = 2.0


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set whether this CPU reports bf16 instructions, whatever it really has."""

    def capable(value: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: value)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: value)
        precision.bf16_capable.cache_clear()

    yield capable
    precision.bf16_capable.cache_clear()


@pytest.mark.parametrize("capable", [True, False])
def test_auto_follows_the_cpus_bf16_capability(cpu_bf16, capable):
    cpu_bf16(capable)
    assert precision.resolve("auto", "cpu") == ("bf16" if capable else "float32")
    assert precision.resolve("float32", "cpu") == "float32"
    assert precision.resolve("bf16", "cpu") == "bf16"  # forced: emulated where the CPU lacks it, but honoured


@pytest.mark.parametrize("capable", [True, False])
def test_auto_follows_a_gpus_bf16_capability(monkeypatch, capable):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: capable)
    precision.bf16_capable.cache_clear()
    try:
        assert precision.resolve("auto", "cuda") == ("bf16" if capable else "float32")
    finally:
        precision.bf16_capable.cache_clear()


def test_an_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="backbone.precision must be one of auto, float32, bf16"):
        precision.resolve("fp16", "cpu")


def watch_autocast(monkeypatch) -> list[tuple[bool, torch.dtype]]:
    """Record, at every forward of any LLMRec, whether CPU autocast is on and its dtype."""
    seen: list[tuple[bool, torch.dtype]] = []
    original = LLMRec._forward

    def recording(self, *args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LLMRec, "_forward", recording)
    return seen


@pytest.mark.parametrize("capable", [True, False])
def test_auto_trains_and_evaluates_under_bf16_autocast_only_where_the_cpu_has_it(
    env,  # noqa: F811
    monkeypatch,
    cpu_bf16,
    capable,
):
    cpu_bf16(capable)
    seen = watch_autocast(monkeypatch)
    metrics = run_teacher(env, f"auto_{capable}", backbone=backbone_settings(precision="auto"))
    assert seen and all(on == capable for on, _ in seen)  # training steps and validation alike
    assert all(dtype == torch.bfloat16 for on, dtype in seen if on)
    assert metrics["details"]["precision"] == ("bf16" if capable else "float32")


@pytest.mark.skipif(not precision.bf16_capable("cpu"), reason="this CPU reports no bf16 instructions")
def test_bf16_autocast_is_active_in_a_training_step_on_this_bf16_cpu(env, monkeypatch):  # noqa: F811
    seen = watch_autocast(monkeypatch)
    run_teacher(env, "auto_here", backbone=backbone_settings(precision="auto"))
    assert seen and all(on and dtype == torch.bfloat16 for on, dtype in seen)


def test_bf16_evaluation_stays_close_to_float32(env, monkeypatch):  # noqa: F811
    """The same trained weights scored in float32 and in bf16: user vectors and sampled metrics agree within
    MIN_COSINE and MAX_METRIC_POINTS; the scores themselves are float32 either way."""
    table = torch.randn(env.data.num_items + 1, 16, generator=torch.Generator().manual_seed(0))
    settings = backbone_settings()
    config = LLMRecConfig.from_settings(env.backbone, settings, prompt_settings(), llm_config(), 2, table)
    model = build_llmrec(config, table, seed=0).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    split = load_eval_splits(env.data.splits, env.data.negatives, env.data.num_items)["test"]
    results = {}
    for setting in ("float32", "bf16"):
        model.config.precision = setting
        model.train(False)  # forget the prompt kept at the other precision
        with torch.no_grad():
            users = model.user_vectors(torch.tensor([[0, 3, 5, 7], [2, 4, 6, 8]]))
        assert users.dtype == torch.float32
        scores = evaluate(model.user_vectors, table, split, 20, 16, full_ranking=False)
        results[setting] = (users, scores)
    cosine = torch.nn.functional.cosine_similarity(results["float32"][0], results["bf16"][0], dim=-1)
    assert cosine.min() > MIN_COSINE, cosine
    for metric, value in results["float32"][1].items():
        if metric != "seconds":
            assert abs(results["bf16"][1][metric] - value) <= MAX_METRIC_POINTS, (metric, value)


def test_the_suite_can_run_as_on_a_cpu_without_bf16():
    """`PYTHONPATH=tests/cpu_without_bf16 make test` runs every process as on a CPU without bf16 (README)."""
    code = "from slmrec.precision import resolve; print(resolve('auto', 'cpu'))"
    without = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "cpu_without_bf16")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=without, timeout=120)
    assert proc.stdout.strip() == "float32", proc.stderr
