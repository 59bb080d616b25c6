"""Shared by the distillation tests: small "trained" LLM recommenders, a dataset with a saved teacher and its
cached states, and the student and teacher_states stages run as their rules run them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from helpers_data import (
    LLM_OUTPUTS,
    backbone_settings,
    data_inputs,
    llm_config,
    llm_outputs,
    make_dataset,
    prompt_settings,
    stage_call,
    write_item_table,
)
from safetensors.torch import load_file

from slmrec.models.llmrec import LLMRec, LLMRecConfig, build_llmrec
from slmrec.stages import student as student_stage
from slmrec.stages import teacher_states as states_stage
from slmrec.targets import needs_teacher_weights

ITEM_DIM = 16


def perturb_lora(model: LLMRec, seed: int) -> None:
    """A "trained" model: non-zero LoRA B, so the adapters matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)


def llm_settings(backbone: str, table: torch.Tensor, layers: int) -> LLMRecConfig:
    # LoRA dropout 0: deterministic in train mode.
    return LLMRecConfig.from_settings(backbone, backbone_settings(), prompt_settings(), llm_config(), layers, table)


def make_llmrec(backbone: str, table: torch.Tensor, layers: int, seed: int) -> LLMRec:
    model = build_llmrec(llm_settings(backbone, table, layers), table, seed=seed)
    perturb_lora(model, seed)
    return model


def states_params(precision: str = "float32", **distill: Any) -> dict[str, Any]:
    """What the teacher_states rule passes: the students' sample settings, its part of `distill`, and the
    compute precision."""
    samples = {k: v for k, v in llm_config().items() if k in ("max_len", "targets_per_user")}
    return {
        "samples": samples,
        "distill": {"blocks": 2, "teacher_quantization": "none", **distill},
        "backbone": {"precision": precision},
    }


def run_states(env: SimpleNamespace, teacher_dir: Path, name: str = "states", **distill: Any) -> Path:
    """Run the teacher_states stage as its rule does; return the states file."""
    inputs = {
        **data_inputs(env.data),
        "item_embeddings": env.items,
        "backbone": env.backbone,
        "teacher": teacher_dir / "trainable.safetensors",
        "teacher_config": teacher_dir / "config.json",
    }
    output = SimpleNamespace(states=env.root / name / "states.safetensors", manifest=env.root / name / "manifest.json")
    states_stage.run(stage_call("teacher_states", inputs, output, states_params(**distill)))
    return Path(output.states)


def distill_env(root: Path, backbone: str) -> SimpleNamespace:
    """A dataset, an item table, a saved 4-layer "teacher artifact" with non-trivial LoRA weights, and its
    cached states."""
    data = make_dataset(root / "data", users=60, items=120, num_negatives=20)
    items = write_item_table(root / "item_embeddings.safetensors", data.num_items, dim=ITEM_DIM)
    table = load_file(items)["item_embeddings"]
    teacher = make_llmrec(backbone, table, layers=4, seed=1)
    teacher.save_artifacts({name: str(root / "teacher" / file) for name, file in LLM_OUTPUTS.items()})
    env = SimpleNamespace(root=root, data=data, items=items, table=table, backbone=backbone, teacher=root / "teacher")
    env.states = run_states(env, env.teacher)
    return env


def run_student(env: SimpleNamespace, target: str, distill: dict, states: Path | None, **resources: Any) -> dict:
    """Run the student stage as the rule calls it for `target` (with the rule's `resources` changed); return its
    metrics row as written."""
    params = {
        "target": target,
        "student": llm_config(layers=2, max_steps=4, eval_steps=2),
        "distill": distill,
        "teacher": llm_config(layers=4) if distill["online"] else {},
        "backbone": backbone_settings(),
        "prompt": prompt_settings(),
        "evaluate": {"full_ranking": False},
        "checkpoints": str(env.root / "checkpoints" / target),
    }
    inputs = {**data_inputs(env.data), "item_embeddings": env.items, "backbone": env.backbone}
    if states:
        inputs["teacher_states"] = states
    if needs_teacher_weights(distill):  # as the rule gives it: the teacher's weights and config
        inputs |= {
            "teacher_weights": env.teacher / "trainable.safetensors",
            "teacher_config": env.teacher / "config.json",
        }
    student_stage.run(stage_call("student", inputs, llm_outputs(env.root / target), params, **resources))
    return json.loads((env.root / target / "metrics.json").read_text())
