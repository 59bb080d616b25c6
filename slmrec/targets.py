"""The pipeline's vocabulary: target names, distillation loss terms and their display names, defined once.

Rules build their wildcard patterns and inputs from here, stages their training mode and row names,
and the report its labels, so a name is never decoded from a string in two places.

Targets under `results/{dataset}/`:
- `teacher`: the E4SRec teacher with `teacher.layers` layers; `teacher_l{n}`: the same with n layers
  (the layer sweep of Figure 2);
- `student`: the offline-distilled SLMRec student of `teacher`; `student_t{n}`: the same, distilled from
  `teacher_l{n}` (e.g. the paper's SLMRec 4←8 beside 4←32); `student_online`: distilled online;
- `ablation/{variant}`: an offline student keeping only some loss terms (Table 4); the variant that
  keeps every term is the offline student itself and is never trained twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TEACHER = "teacher"
STUDENT = "student"
STUDENT_ONLINE = "student_online"
STUDENTS = (STUDENT, STUDENT_ONLINE)
ABLATION = "ablation"


@dataclass(frozen=True)
class LossTerm:
    """A weighted distillation term: its config key, its key in the training log and its short name."""

    name: str
    weight_key: str
    log_key: str
    label: str


LOSS_TERMS = (
    LossTerm("cos", "cos_weight", "loss_cos", "cos"),
    LossTerm("l2", "l2_weight", "loss_l2", "L2"),
    LossTerm("multi_supervision", "multi_supervision_weight", "loss_ms", "MS"),
)
CE_LOG_KEY = "loss_ce"
TEACHER_CE_LOG_KEY = "loss_teacher"
ALIGNMENT_TERMS = ("cos", "l2")  # the terms that compare student and teacher states

# Which weighted terms each Table 4 variant keeps (cross-entropy is always on).
ABLATION_VARIANTS: dict[str, tuple[str, ...]] = {
    "ce": (),
    "ce_cos": ("cos",),
    "ce_cos_l2": ("cos", "l2"),
    "ce_cos_ms": ("cos", "multi_supervision"),
    "all": tuple(term.name for term in LOSS_TERMS),
}
FULL_VARIANT = "all"  # the offline student itself
TRAINED_VARIANTS = tuple(v for v in ABLATION_VARIANTS if v != FULL_VARIANT)

TEACHER_PATTERN = r"teacher(_l[0-9]+)?"
STUDENT_OF_PATTERN = r"student_t([0-9]+)"  # an offline student of the E4SRec_l teacher teacher_l{l}
STUDENT_PATTERN = "|".join([*STUDENTS, STUDENT_OF_PATTERN, *(f"{ABLATION}/{v}" for v in TRAINED_VARIANTS)])


def sweep_teacher(layers: int) -> str:
    """The target of the layer sweep's E4SRec with `layers` layers."""
    return f"{TEACHER}_l{layers}"


def teacher_layers(target: str, configured: int) -> int:
    """The layer count a teacher target trains: `teacher` uses config, `teacher_l{n}` uses n."""
    match = re.fullmatch(TEACHER_PATTERN, target)
    if not match:
        raise ValueError(f"{target!r} is not a teacher target (expected teacher or teacher_l<n>)")
    return int(match.group(1)[2:]) if match.group(1) else configured


def student_of(layers: int) -> str:
    """The offline student distilled from the E4SRec_l teacher with `layers` layers."""
    return f"{STUDENT}_t{layers}"


def student_teacher(target: str) -> str:
    """The teacher target an offline student learns from: `teacher`, or `teacher_l{n}` for `student_t{n}`."""
    match = re.fullmatch(STUDENT_OF_PATTERN, target)
    return sweep_teacher(int(match.group(1))) if match else TEACHER


def ablation_target(variant: str) -> str:
    """Where a Table 4 variant's metrics live: the `all` variant is the offline student."""
    if variant not in ABLATION_VARIANTS:
        raise ValueError(f"unknown ablation variant {variant!r}; known: {', '.join(ABLATION_VARIANTS)}")
    return STUDENT if variant == FULL_VARIANT else f"{ABLATION}/{variant}"


def student_distill(target: str, distill: dict[str, Any]) -> dict[str, Any]:
    """The distill settings one student target trains with: its mode, and the weights its variant keeps.

    Only what the target reads is returned, so editing a weight a variant switches off reruns nothing.
    """
    if not re.fullmatch(STUDENT_PATTERN, target):
        raise ValueError(f"{target!r} is not a student target ({STUDENT_PATTERN})")
    online = target == STUDENT_ONLINE
    kept = ABLATION_VARIANTS[target.removeprefix(f"{ABLATION}/")] if target.startswith(ABLATION) else None
    weights = {
        term.weight_key: distill[term.weight_key] if kept is None or term.name in kept else 0.0 for term in LOSS_TERMS
    }
    settings = {"online": online, "blocks": distill["blocks"], **weights}
    if online:
        settings["online_teacher_gradients"] = distill["online_teacher_gradients"]
    return settings


def needs_offline_teacher(settings: dict[str, Any]) -> bool:
    """An offline student reads the trained teacher only when a term compares it with the teacher."""
    return not settings["online"] and any(settings[f"{name}_weight"] > 0 for name in ALIGNMENT_TERMS)


def student_name(target: str, student_layers: int, teacher_layers: int | None) -> str:
    """A student row always names its teacher: `SLMRec 4←8`, `SLMRec_online 4←8`, `SLMRec_ce 4`."""
    base = (
        "SLMRec"
        if re.fullmatch(STUDENT_OF_PATTERN, target)
        else {STUDENT: "SLMRec", STUDENT_ONLINE: "SLMRec_online"}.get(target)
    )
    base = base or "SLMRec_" + target.removeprefix(f"{ABLATION}/")
    return f"{base} {student_layers}←{teacher_layers}" if teacher_layers else f"{base} {student_layers}"


def variant_label(variant: str) -> str:
    """Table 4's row label of an ablation variant, e.g. `CE + cos + MS`."""
    labels = {term.name: term.label for term in LOSS_TERMS}
    return " + ".join(["CE", *(labels[name] for name in ABLATION_VARIANTS[variant])])


def teacher_name(layers: int) -> str:
    return f"E4SRec_{layers}"
