"""What a rule's settings params hold, computed in one place: for the rules (rules/common.smk), which hand them to
the stages, and for `provenance`, which compares a manifest's recorded params with what the current config gives.

A param named after a config section holds that section narrowed to what the stage reads; a teacher's `layers`
is the depth its target names; a student's `distill` is what its target trains with (an ablation variant
switches terms off); `source` is the dataset's canonical source.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from slmrec import targets
from slmrec.config import canonical, stage_config


def section(
    config: dict[str, Any],
    schema: dict[str, Any],
    dataset: str,
    stage: str,
    keys: Iterable[str] | None = None,
    drop: Iterable[str] = (),
) -> dict[str, Any]:
    """A dataset's merged settings of one stage, narrowed to `keys` (or without `drop`), so that a stage is rerun
    only by the settings it reads."""
    chosen = stage_config(config, schema, dataset, stage)
    wanted, dropped = (None if keys is None else set(keys)), set(drop)
    return {k: v for k, v in chosen.items() if (wanted is None or k in wanted) and k not in dropped}


def teacher_layers(config: dict[str, Any], schema: dict[str, Any], dataset: str, target: str) -> int:
    """The depth a teacher target trains: `teacher.layers`, or the n of `teacher_l{n}`."""
    return targets.teacher_layers(target, stage_config(config, schema, dataset, "teacher")["layers"])


def student_distill(config: dict[str, Any], schema: dict[str, Any], dataset: str, target: str) -> dict[str, Any]:
    """The distillation settings a student target trains with."""
    return targets.student_distill(target, stage_config(config, schema, dataset, "distill"))


def current(config: dict[str, Any], schema: dict[str, Any], dataset: str, stage: str, param: str, target: Any) -> Any:
    """What the current config gives a recorded param of `stage` (None for the params that hold no settings:
    paths, names). Sections come whole: a manifest records the narrowed keys, and only those are compared."""
    if param == "source":
        return canonical(config["datasets"][dataset]["source"])
    if stage == "teacher" and param == "layers":
        return teacher_layers(config, schema, dataset, target)
    if param not in schema["$defs"] or param not in schema["properties"]:
        return None
    if stage in ("student", "sasrec_student") and param == "distill":
        return student_distill(config, schema, dataset, target)
    return section(config, schema, dataset, param)
