"""Per-dataset stage settings: top-level defaults merged with a dataset's own overrides.

Snakemake validates the whole file (and fills defaults) with `snakemake.utils.validate`. Overrides under
`datasets.<name>.<stage>` are partial, so they are checked here, after merging, against the same
stage schema; an error names the full key path so the user knows which line of config.yaml to fix.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# The workflow's schema, beside the Snakefile at the top of the checkout.
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config.schema.yaml"


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

    The student inherits every training setting it does not set from the teacher of the same dataset
    (its schema lists those settings without defaults, so the teacher's values show through).
    """
    if dataset not in config["datasets"]:
        known = ", ".join(sorted(config["datasets"]))
        raise ConfigError(f"unknown dataset {dataset!r}: config.yaml defines {known}")
    override = config["datasets"][dataset].get(stage, {})
    merged = deep_merge(config.get(stage, {}), override)
    if stage == "student":
        merged = deep_merge(stage_config(config, schema, dataset, "teacher"), merged)
    stage_schema = {"$defs": schema["$defs"], **schema["$defs"][stage]}
    errors = sorted(jsonschema.Draft202012Validator(stage_schema).iter_errors(merged), key=str)
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path)
        origin = f"datasets.{dataset}.{stage}" if override else stage
        raise ConfigError(f"config key {origin}{'.' + where if where else ''}: {first.message}")
    return canonical(merged)


def schema_defaults(stage: str, schema_path: str | os.PathLike = SCHEMA_PATH) -> dict[str, Any]:
    """A stage section with nothing set: every value is the schema's default (the one place defaults live)."""
    from snakemake.utils import validate

    config: dict[str, Any] = {"datasets": {"any": {"source": {"kind": "synthetic"}}}}
    validate(config, str(schema_path), set_default=True)
    if stage == "source":
        return config["datasets"]["any"]["source"]
    return stage_config(config, load_schema(schema_path), "any", stage)


def backbone_depth(backbone: dict[str, Any]) -> int | None:
    """Decoder layers of the configured backbone: a preset's, or a local checkpoint's `config.json` (None
    when it cannot be read cheaply: a GGUF file, whose header takes seconds to parse, is checked when it
    is loaded; a path that does not exist on this machine yet)."""
    from slmrec.models.presets import is_gguf, preset_depth

    if not backbone["path"]:
        return preset_depth(backbone["preset"])
    if is_gguf(backbone["path"]):
        return None
    try:
        return int(json.loads((Path(backbone["path"]) / "config.json").read_text())["num_hidden_layers"])
    except (OSError, ValueError, KeyError):
        return None


def check_dataset(config: dict[str, Any], schema: dict[str, Any], dataset: str, stage: str) -> None:
    """Settings of a stage that each pass the schema but contradict one another or the backbone.

    The workflow calls this while it builds the DAG, for the jobs a target needs, so a dry run fails
    rather than a job hours into a real run, and a dataset used only for its data is never refused.
    """
    from slmrec.models.blocks import DistillConfigError, block_boundaries

    def settings(section: str) -> dict[str, Any]:
        return stage_config(config, schema, dataset, section)

    where = f"datasets.{dataset}"
    if stage == "sasrec":
        sasrec = settings("sasrec")
        if sasrec["hidden"] % sasrec["heads"]:
            raise ConfigError(
                f"{where}.sasrec: hidden = {sasrec['hidden']} must be divisible by heads = {sasrec['heads']}"
            )
        return
    teacher, student = settings("teacher")["layers"], settings("student")["layers"]
    depth = backbone_depth(settings("backbone"))
    if depth is not None:
        deep = [("teacher.layers", teacher)] + [("report.layer_sweep", n) for n in settings("report")["layer_sweep"]]
        for key, layers in deep:
            if layers > depth:
                raise ConfigError(f"{where}.{key}: {layers} layers, but the backbone has only {depth} decoder layers")
    if stage == "student":
        if student >= teacher:
            raise ConfigError(
                f"{where}.student.layers = {student}: the student must be smaller than its teacher "
                f"(teacher.layers = {teacher})"
            )
        try:
            block_boundaries(teacher, student, settings("distill")["blocks"])
        except DistillConfigError as err:
            raise ConfigError(f"{where} (teacher.layers, student.layers, distill.blocks): {err}") from err
