"""Per-dataset stage settings: top-level defaults merged with a dataset's own overrides.

Snakemake validates the whole file (and fills defaults) with `snakemake.utils.validate`. Overrides under
`datasets.<name>.<stage>` are partial, so they are checked here, after merging, against the same
stage schema; an error names the full key path so the user knows which line of config.yaml to fix.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from slmrec.errors import ConfigError

# The workflow's schema, beside the Snakefile at the top of the checkout.
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config.schema.yaml"


class _Yaml12Numbers(yaml.SafeLoader):
    """YAML's safe loader, reading numbers as YAML 1.2 does: `1e-4` (no dot) is a float, where YAML 1.1, and
    so PyYAML, reads a string."""


_Yaml12Numbers.add_implicit_resolver(  # after YAML 1.1's own resolvers: `12` stays an integer
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
    list("-+.0123456789"),
)


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


def prepare_config(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """What the Snakefile makes of the config Snakemake loaded, before validating it: values typed by the
    schema (`typed_overrides`), non-finite numbers refused, variants expanded (`with_variants`)."""
    typed = typed_overrides(config, schema)
    _refuse_non_finite(typed, "")
    return with_variants(typed)


def _refuse_non_finite(value: Any, where: str) -> None:
    """Refuse NaN and infinities (YAML's `.nan`, `.inf`) anywhere in `value`, naming the key.

    The schema lets them through (NaN is no less than any minimum), and a NaN weight would silently switch
    its term off and make metrics.json invalid JSON.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key {where}: {value} is not a finite number; expected a finite number")
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        _refuse_non_finite(child, f"{where}.{key}" if where else str(key))


def typed_overrides(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`config` with each string the schema refuses replaced by its reading as YAML 1.2, where the schema
    allows that reading's type.

    Snakemake reads the values of `--config` with YAML's base loader, which types nothing:
    `--config 'distill={cos_weight: 0.5}'` gives the string '0.5', and validation would refuse it. A config
    file read with YAML 1.1 gives the string '1e-4' for `1e-4`. A string the schema accepts as it is stays a
    string. A reading of the right type replaces the string even where it breaks another rule, so that
    `--config 'teacher={batch_size: 0}'` is refused as the file's `batch_size: 0` is ("0 is less than the
    minimum of 1"). A dataset's stage overrides are typed by the top-level section of the same name.
    """
    typed = _typed(config, [schema], schema)
    for entry in typed.get("datasets", {}).values() if isinstance(typed.get("datasets"), dict) else []:
        if isinstance(entry, dict):
            for stage, section in entry.items():
                if stage != "source" and stage in schema["properties"]:
                    entry[stage] = _typed(section, [_resolve(schema["properties"][stage], schema)], schema)
    return typed


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """A subschema with its local `$ref` (`#/$defs/...`) followed."""
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def _candidates(schema: dict[str, Any], key: str, root: dict[str, Any]) -> list[dict[str, Any]]:
    """Every subschema that may apply to `key` of an object: its property, and those of conditional branches."""
    found = []
    if key in schema.get("properties", {}):
        found.append(_resolve(schema["properties"][key], root))
    elif isinstance(schema.get("additionalProperties"), dict):
        found.append(_resolve(schema["additionalProperties"], root))
    for branch in [*schema.get("allOf", []), *(schema[k] for k in ("then", "else") if k in schema)]:
        found += _candidates(_resolve(branch, root), key, root)
    return [candidate for candidate in found if candidate]


def _typed(value: Any, schemas: list[dict[str, Any]], root: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _typed(v, [c for s in schemas for c in _candidates(s, k, root)], root) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v, [_resolve(s["items"], root) for s in schemas if "items" in s], root) for v in value]
    if not isinstance(value, str) or not schemas:
        return value
    validators = [_StrictTypes({**s, "$defs": root.get("$defs", {})}) for s in schemas]
    if any(v.is_valid(value) for v in validators):
        return value
    try:
        parsed = yaml.load(value, Loader=_Yaml12Numbers)
    except yaml.YAMLError:
        return value
    return parsed if any(_of_allowed_type(v, parsed) for v in validators) else value


# jsonschema counts 1000.0 as an integer; a string typed by the schema must not become a float where it wants one.
_StrictTypes = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)


def _of_allowed_type(validator: jsonschema.protocols.Validator, value: Any) -> bool:
    """Whether `value` is of a type the schema allows, whatever its other rules (a minimum, an enum) say."""
    return not any(error.validator == "type" and not error.path for error in validator.iter_errors(value))


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
    from slmrec.errors import DistillConfigError
    from slmrec.models.blocks import block_boundaries
    from slmrec.targets import student_teacher, teacher_layers

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
        report = settings("report")
        deep = [("teacher.layers", teacher)] + [("report.layer_sweep", n) for n in report["layer_sweep"]]
        # A student_t{l}'s teacher has l layers (the others learn from `teacher`, checked first).
        deep += [("report.students", teacher_layers(student_teacher(s), teacher)) for s in report["students"]]
        for key, layers in deep:
            if layers > depth:
                raise ConfigError(
                    f"{where}.{key}: {layers} layers, but the backbone has only {depth} decoder layers; "
                    f"set {where}.{key} to at most {depth}, or a deeper {where}.backbone"
                )
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


def with_variants(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with every variant entry (`datasets.<name>.base: <other>`) expanded: the base's entry with the
    variant's own keys deep-merged over it.

    A variant is a dataset of its own, with its own `results/<name>/`, so two settings of the same data sit
    side by side and neither overwrites the other. Run before schema validation, so the merged entry is
    validated and given defaults like any other.
    """
    datasets = config.get("datasets")
    if not isinstance(datasets, dict):
        return config  # the schema says what is wrong
    resolved: dict[str, Any] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> Any:
        if name in resolved:
            return resolved[name]
        entry = datasets[name]
        if not isinstance(entry, dict) or "base" not in entry:
            resolved[name] = entry
            return entry
        base = entry["base"]
        if not isinstance(base, str) or base not in datasets:
            known = ", ".join(sorted(n for n in datasets if n != name))
            raise ConfigError(f"config key datasets.{name}.base: {base!r} is not a dataset; expected one of {known}")
        if base in chain:
            raise ConfigError(f"config key datasets.{name}.base: the bases form a cycle: {' -> '.join([*chain, base])}")
        base_entry = resolve(base, (*chain, base))
        if not isinstance(base_entry, dict):
            return entry  # the schema says what is wrong with the base
        own = {key: value for key, value in entry.items() if key != "base"}
        resolved[name] = {**deep_merge({k: v for k, v in base_entry.items() if k != "base"}, own), "base": base}
        return resolved[name]

    return {**config, "datasets": {name: resolve(name, (name,)) for name in datasets}}


def load_config(paths: Sequence[str | os.PathLike], schema_path: str | os.PathLike = SCHEMA_PATH) -> dict[str, Any]:
    """The config Snakemake builds from these files (later ones deep-merged over earlier ones, as
    `--configfile` does), prepared as the Snakefile prepares it and with the schema's defaults filled in."""
    from snakemake.utils import validate

    config: dict[str, Any] = {}
    for path in paths:
        with open(path) as handle:
            config = deep_merge(config, yaml.safe_load(handle) or {})
    config = prepare_config(config, load_schema(schema_path))
    validate(config, str(schema_path), set_default=True)
    return config
