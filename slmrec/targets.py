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
SASREC = "sasrec"
SASREC_STUDENT = "sasrec_student"
ABLATION = "ablation"


@dataclass(frozen=True)
class LossTerm:
    """A weighted distillation term: its config key, its key in the training log, its short name, and the other
    `distill` keys it reads (only when it is on, so that they rerun only the students that use it)."""

    name: str
    weight_key: str
    log_key: str
    label: str
    settings: tuple[str, ...] = ()


# SLMRec's terms, on the block-boundary hidden states (they need student and teacher of the same width).
HIDDEN_TERMS = (
    LossTerm("cos", "cos_weight", "loss_cos", "cos"),
    LossTerm("l2", "l2_weight", "loss_l2", "L2"),
    LossTerm("multi_supervision", "multi_supervision_weight", "loss_ms", "MS"),
)
# Beyond the paper, on the teacher's scores over the items (any student: an LLM or SASRec).
SCORE_TERMS = (
    LossTerm("kd_logits", "kd_logits_weight", "loss_kd_logits", "logits KD", ("kd_temperature",)),
    LossTerm(
        "kd_rank",
        "kd_rank_weight",
        "loss_kd_rank",
        "rank KD",
        ("kd_rank_k", "kd_rank_gamma_position", "kd_rank_gamma_confidence", "kd_rank_gamma_consistency"),
    ),
)
LOSS_TERMS = HIDDEN_TERMS + SCORE_TERMS
CE_LOG_KEY = "loss_ce"
TEACHER_CE_LOG_KEY = "loss_teacher"
ALIGNMENT_TERMS = ("cos", "l2")  # the terms that compare student and teacher states
SCORE_TERM_NAMES = tuple(term.name for term in SCORE_TERMS)
TEACHER_TERMS = ALIGNMENT_TERMS + SCORE_TERM_NAMES  # the terms that read the trained teacher


@dataclass(frozen=True)
class Variant:
    """A Table 4 row: the weighted terms a student keeps (cross-entropy is always on), whether it starts from its
    teacher's trained weights, and whether the student is SASRec rather than a small LLM."""

    terms: tuple[str, ...]
    init_from_teacher: bool = False
    sasrec: bool = False


# The paper's Table 4; `all` is the offline student itself.
PAPER_VARIANTS = {
    "ce": Variant(()),
    "ce_cos": Variant(("cos",)),
    "ce_cos_l2": Variant(("cos", "l2")),
    "ce_cos_ms": Variant(("cos", "multi_supervision")),
    "all": Variant(tuple(term.name for term in HIDDEN_TERMS)),
}
# Beyond the paper (`report.kd_ablation`): each score term alone, on the LLM student with and without its teacher's
# initialisation, and on SASRec; `sasrec` is the plain SASRec run itself, the SASRec students' twin.
KD_VARIANTS = {
    "ce_logits": Variant(("kd_logits",)),
    "ce_rank": Variant(("kd_rank",)),
    "init_ce": Variant((), init_from_teacher=True),
    "init_logits": Variant(("kd_logits",), init_from_teacher=True),
    "init_rank": Variant(("kd_rank",), init_from_teacher=True),
    SASREC: Variant((), sasrec=True),
    "sasrec_logits": Variant(("kd_logits",), sasrec=True),
    "sasrec_rank": Variant(("kd_rank",), sasrec=True),
}
ABLATION_VARIANTS = {**PAPER_VARIANTS, **KD_VARIANTS}
KD_ROWS = ("ce", *KD_VARIANTS)  # the score-distillation block of the ablation, with the LLM students' CE-only twin
FULL_VARIANT = "all"  # the offline student itself
UNTRAINED_VARIANTS = {FULL_VARIANT: STUDENT, SASREC: SASREC}  # rows that are another target's run, never trained twice
TRAINED_VARIANTS = tuple(v for v in ABLATION_VARIANTS if v not in UNTRAINED_VARIANTS)
# The CE-only twin each KD variant is compared with: the same model without the teacher's terms or weights.
KD_TWINS = {v: SASREC if spec.sasrec else "ce" for v, spec in KD_VARIANTS.items() if v not in ("ce", SASREC)}

TEACHER_PATTERN = r"teacher(_l[0-9]+)?"
STUDENT_OF_PATTERN = r"student_t([0-9]+)"  # an offline student of the E4SRec_l teacher teacher_l{l}
OF_TEACHER = r"_t([0-9]+)$"  # the suffix of a student of teacher_l{l}: student_t8, sasrec_student_t2
LLM_STUDENT_PATTERN = "|".join(
    [*STUDENTS, STUDENT_OF_PATTERN, *(f"{ABLATION}/{v}" for v in TRAINED_VARIANTS if not ABLATION_VARIANTS[v].sasrec)]
)
SASREC_STUDENT_PATTERN = "|".join(
    [f"{SASREC_STUDENT}(_t[0-9]+)?", *(f"{ABLATION}/{v}" for v in TRAINED_VARIANTS if ABLATION_VARIANTS[v].sasrec)]
)
STUDENT_PATTERN = f"{LLM_STUDENT_PATTERN}|{SASREC_STUDENT_PATTERN}"


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
    """The teacher target a student learns from: `teacher_l{n}` for `student_t{n}` or `sasrec_student_t{n}`, else
    `teacher`."""
    match = re.search(OF_TEACHER, target)
    return sweep_teacher(int(match.group(1))) if match and re.fullmatch(STUDENT_PATTERN, target) else TEACHER


def sasrec_student_of(layers: int) -> str:
    """SASRec distilled from the E4SRec_l teacher with `layers` layers."""
    return f"{SASREC_STUDENT}_t{layers}"


def ablation_target(variant: str) -> str:
    """Where a Table 4 variant's metrics live: `all` is the offline student, `sasrec` the plain SASRec run."""
    if variant not in ABLATION_VARIANTS:
        raise ValueError(f"unknown ablation variant {variant!r}; known: {', '.join(ABLATION_VARIANTS)}")
    return UNTRAINED_VARIANTS.get(variant, f"{ABLATION}/{variant}")


def is_sasrec_student(target: str) -> bool:
    return re.fullmatch(SASREC_STUDENT_PATTERN, target) is not None


def student_variant(target: str, distill: dict[str, Any]) -> Variant:
    """What a student target trains: an ablation variant's own terms, or for SLMRec's students the hidden-state
    terms plus `distill.kd_terms` (and `distill.student_init`), or for SASRec's both score terms."""
    if not re.fullmatch(STUDENT_PATTERN, target):
        raise ValueError(f"{target!r} is not a student target ({STUDENT_PATTERN})")
    if target.startswith(f"{ABLATION}/"):
        return ABLATION_VARIANTS[target.removeprefix(f"{ABLATION}/")]
    if is_sasrec_student(target):
        return Variant(SCORE_TERM_NAMES, sasrec=True)
    terms = tuple(term.name for term in HIDDEN_TERMS) + tuple(distill["kd_terms"])
    return Variant(terms, init_from_teacher=distill["student_init"] == TEACHER)


def student_distill(target: str, distill: dict[str, Any]) -> dict[str, Any]:
    """The distill settings one student target trains with: its mode, the weights its variant keeps (the others 0),
    and the settings of the score terms it keeps.

    Only what the target reads is returned, so editing a weight, or a setting of a term, that a variant switches
    off reruns nothing.
    """
    variant = student_variant(target, distill)
    kept = [term for term in LOSS_TERMS if term.name in variant.terms and distill[term.weight_key] > 0]
    settings: dict[str, Any] = {t.weight_key: distill[t.weight_key] if t in kept else 0.0 for t in LOSS_TERMS}
    settings |= {key: distill[key] for term in kept for key in term.settings}
    if variant.sasrec:  # offline, fresh, and no hidden-state term (they need an LLM's width): constants
        return settings | {"online": False, "init_from_teacher": False}
    online = target == STUDENT_ONLINE
    if online and variant.init_from_teacher:
        raise ValueError(
            "distill.student_init: teacher starts a student from its trained teacher; student_online trains its "
            "teacher alongside, from scratch (use an offline student, or student_init: fresh)"
        )
    settings |= {"online": online, "blocks": distill["blocks"], "init_from_teacher": variant.init_from_teacher}
    if online:
        settings["online_teacher_gradients"] = distill["online_teacher_gradients"]
    return settings


def needs_offline_teacher(settings: dict[str, Any]) -> bool:
    """An offline student reads the trained teacher's cached states when a term compares it with the teacher."""
    return not settings["online"] and any(settings[f"{name}_weight"] > 0 for name in TEACHER_TERMS)


def needs_teacher_weights(settings: dict[str, Any]) -> bool:
    """An offline student reads the trained teacher's weights to start from them, or for its output projection,
    which turns the cached final states into the teacher's scores."""
    scored = any(settings[f"{name}_weight"] > 0 for name in SCORE_TERM_NAMES)
    return not settings["online"] and (settings["init_from_teacher"] or scored)


def student_name(target: str, student_layers: int, teacher_layers: int | None) -> str:
    """A student row always names its teacher: `SLMRec 4←8`, `SLMRec_online 4←8`, `SLMRec_ce 4`."""
    base = (
        "SLMRec"
        if re.fullmatch(STUDENT_OF_PATTERN, target)
        else {STUDENT: "SLMRec", STUDENT_ONLINE: "SLMRec_online"}.get(target)
    )
    base = base or "SLMRec_" + target.removeprefix(f"{ABLATION}/")
    return f"{base} {student_layers}←{teacher_layers}" if teacher_layers else f"{base} {student_layers}"


def sasrec_student_name(teacher_layers: int | None, terms: tuple[str, ...]) -> str:
    """`SASRec ← E4SRec_2 (rank KD)`; with no score term on, plain `SASRec`."""
    return f"SASRec ← {teacher_name(teacher_layers)} ({terms_label(terms)})" if terms and teacher_layers else "SASRec"


def terms_label(terms: tuple[str, ...]) -> str:
    labels = {term.name: term.label for term in LOSS_TERMS}
    return " + ".join(labels[name] for name in terms)


def variant_label(variant: str) -> str:
    """Table 4's row label of an ablation variant, e.g. `CE + cos + MS`, `teacher init + CE + rank KD`,
    `SASRec: CE + logits KD`."""
    return label_of(ABLATION_VARIANTS[variant])


def trained_label(variant: str, settings: dict[str, Any] | None) -> str:
    """The row label of what a student target trained with (its `distill` settings, None for plain SASRec): the
    `all` row is the configured student, which may add score terms or start from its teacher."""
    if settings is None:
        return variant_label(variant)
    terms = tuple(term.name for term in LOSS_TERMS if settings[term.weight_key] > 0)
    return label_of(Variant(terms, settings["init_from_teacher"], ABLATION_VARIANTS[variant].sasrec))


def label_of(spec: Variant) -> str:
    label = " + ".join(["CE", *([terms_label(spec.terms)] if spec.terms else [])])
    if spec.init_from_teacher:
        label = f"teacher init + {label}"
    return f"SASRec: {label}" if spec.sasrec else label


def teacher_name(layers: int) -> str:
    return f"E4SRec_{layers}"
