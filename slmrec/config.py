"""Per-dataset stage settings: top-level defaults merged with a dataset's own overrides.

Snakemake validates the whole file (and fills defaults) with `snakemake.utils.validate`. Overrides under
`datasets.<name>.<stage>` are partial, so they are checked here, after merging, against the same
stage schema; an error names the full key path so the user knows which line of config.yaml to fix.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import jsonschema
import yaml

# The weighted distillation terms (distill.<term>_weight), and which of them each Table 4 ablation keeps.
DISTILL_TERMS = ("cos", "l2", "multi_supervision")
ABLATION_TERMS = {
    "ce": (),
    "ce_cos": ("cos",),
    "ce_cos_l2": ("cos", "l2"),
    "ce_cos_ms": ("cos", "multi_supervision"),
    "all": ("cos", "l2", "multi_supervision"),
}


def variant_settings(distill: dict[str, Any], variant: str) -> dict[str, Any]:
    """The distill settings of a target: `student`, `student_online` or `ablation/<variant>`."""
    if variant == "student":
        return {**distill, "mode": "offline"}
    if variant == "student_online":
        return {**distill, "mode": "online"}
    name = variant.removeprefix("ablation/")
    if name not in ABLATION_TERMS:
        raise ValueError(f"unknown ablation variant {name!r}; known: {', '.join(ABLATION_TERMS)}")
    kept = ABLATION_TERMS[name]
    weights = {f"{term}_weight": distill[f"{term}_weight"] if term in kept else 0.0 for term in DISTILL_TERMS}
    return {**distill, **weights, "mode": "offline"}


class ConfigError(ValueError):
    pass


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def canonical(value: Any) -> Any:
    """Dicts with sorted keys, recursively: Snakemake compares params by their printed form, so key order
    (which depends on where a setting was written) must not make identical settings look changed."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def load_schema(path: str | os.PathLike) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


def stage_config(config: dict[str, Any], schema: dict[str, Any], dataset: str, stage: str) -> dict[str, Any]:
    """The settings of `stage` for `dataset`: what a rule receives through `params:`.

    The student inherits every training setting it does not set from the teacher of the same dataset.
    """
    if dataset not in config["datasets"]:
        known = ", ".join(sorted(config["datasets"]))
        raise ConfigError(f"unknown dataset {dataset!r}: config.yaml defines {known}")
    override = config["datasets"][dataset].get(stage, {})
    merged = deep_merge(config.get(stage, {}), override)
    checked_as = stage
    if stage == "student":
        merged = deep_merge(stage_config(config, schema, dataset, "teacher"), merged)
        checked_as = "teacher"
    stage_schema = {"$defs": schema["$defs"], **schema["$defs"][checked_as]}
    errors = sorted(jsonschema.Draft202012Validator(stage_schema).iter_errors(merged), key=str)
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path)
        origin = f"datasets.{dataset}.{stage}" if override else stage
        raise ConfigError(f"config key {origin}{'.' + where if where else ''}: {first.message}")
    return canonical(merged)
