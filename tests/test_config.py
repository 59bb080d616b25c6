"""config.yaml against config.schema.yaml: defaults, errors that name the key, per-dataset overrides."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SNAKEMAKE, copy_workflow
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from slmrec.config import (
    backbone_depth,
    check_dataset,
    deep_merge,
    load_config,
    load_schema,
    prepare_config,
    stage_config,
    typed_overrides,
)
from slmrec.errors import ConfigError

SCHEMA_PATH = str(ROOT / "config.schema.yaml")
SHIPPED = yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.fixture
def config() -> dict:
    """The shipped config.yaml with the schema's defaults filled in, as the workflow sees it."""
    filled = copy.deepcopy(SHIPPED)
    validate(filled, SCHEMA_PATH)
    return filled


@pytest.fixture(scope="module")
def schema() -> dict:
    return load_schema(SCHEMA_PATH)


def invalid(config: dict) -> str:
    with pytest.raises(WorkflowError) as err:
        validate(config, SCHEMA_PATH)
    return str(err.value)


# --- the shipped file and defaults ----------------------------------------------------------------------------


def test_shipped_config_validates_and_gets_defaults(config):
    assert list(SHIPPED) == ["datasets"]  # the defaults live in the schema alone
    validate(config, SCHEMA_PATH)
    assert config["preprocess"] == {"min_rating": 3, "kcore": 5, "on_bad_line": "error"}
    assert config["sasrec"]["max_len"] == 50 and config["teacher"]["max_len"] == 30  # the authors: 50 and 30
    assert config["report"]["students"] == ["student"]
    assert config["negatives"] == {"num_negatives": 999, "seed": 2025}
    assert sorted(config["datasets"]) == ["cloth", "demo", "ml100k", "movie", "music", "sport"]
    demo = config["datasets"]["demo"]["source"]
    # Filled in by the schema: nothing of this is written in config.yaml.
    assert demo["min_length"] == 8 and demo["max_length"] == 30 and demo["successors"] == 3
    assert demo["transition_prob"] == 0.7 and demo["popularity_exponent"] == 1.0 and demo["low_rating_prob"] == 0.1
    cloth = config["datasets"]["cloth"]["source"]
    assert cloth["file"] == "Clothing_Shoes_and_Jewelry_5.json.gz"
    assert cloth["sha256"] is None
    assert len(cloth["urls"]) == 3 and cloth["urls"][0].startswith("https://mcauleylab.ucsd.edu/")


def test_missing_sections_are_filled_with_defaults():
    config = {"datasets": {"tiny": {"source": {"kind": "synthetic"}}}}
    validate(config, SCHEMA_PATH)
    assert config["preprocess"]["kcore"] == 5
    assert config["preprocess"]["min_rating"] == 3
    assert config["preprocess"]["on_bad_line"] == "error"
    assert config["negatives"]["num_negatives"] == 999
    assert config["negatives"]["seed"] == 2025
    assert config["datasets"]["tiny"]["source"] == {
        "kind": "synthetic",
        "users": 2000,
        "items": 2000,
        "seed": 7,
        "min_length": 8,
        "max_length": 30,
        "successors": 3,
        "transition_prob": 0.7,
        "popularity_exponent": 1.0,
        "low_rating_prob": 0.1,
    }


def test_local_sources_get_their_defaults():
    config = {
        "datasets": {
            "mine": {"source": {"kind": "amazon2018", "path": "/data/x_5.json.gz"}},
            "csv": {"source": {"kind": "ratings_csv", "path": "/data/x.csv"}},
        }
    }
    validate(config, SCHEMA_PATH)
    assert config["datasets"]["mine"]["source"] == {"kind": "amazon2018", "path": "/data/x_5.json.gz", "sha256": None}
    csv = config["datasets"]["csv"]["source"]
    assert csv["columns"] == ["item", "user", "rating", "timestamp"] and csv["header"] is False


# --- errors name the key --------------------------------------------------------------------------------------


def test_wrong_type_names_key_and_value(config):
    config["preprocess"]["kcore"] = "five"
    message = invalid(config)
    assert "kcore" in message and "'five'" in message and "integer" in message


def test_unknown_source_kind_names_the_value(config):
    config["datasets"]["demo"]["source"]["kind"] = "parquetz"
    message = invalid(config)
    assert "parquetz" in message and "kind" in message


def test_missing_source_names_the_key(config):
    del config["datasets"]["music"]["source"]
    message = invalid(config)
    assert "'source' is a required property" in message
    assert "music" in message


@pytest.mark.parametrize(
    ("where", "key"),
    [((), "sasrecc"), (("preprocess",), "kcoer"), (("datasets", "demo"), "sasrec_typo"), (("negatives",), "seeds")],
)
def test_unknown_key_is_named(config, where, key):
    section = config
    for part in where:
        section = section[part]
    section[key] = 1
    message = invalid(config)
    assert f"'{key}' was unexpected" in message


def test_unknown_synthetic_option_is_named(config):
    config["datasets"]["demo"]["source"]["userz"] = 10
    assert "'userz' was unexpected" in invalid(config)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("preprocess", "kcore", 2),  # below 3 there is no train/valid/test for every user
        ("preprocess", "on_bad_line", "ignore"),
        ("sasrec", "max_len", 0),
        ("teacher", "max_len", 0),
        ("report", "students", []),
        ("negatives", "num_negatives", 0),
        ("negatives", "seed", 1.5),
    ],
)
def test_out_of_range_values_are_named(config, section, key, value):
    config[section][key] = value
    message = invalid(config)
    assert key in message and repr(value) in message


def test_amazon_source_needs_a_path_or_urls_and_file(config):
    config["datasets"]["cloth"]["source"] = {"kind": "amazon2018", "file": "x.json.gz"}
    assert "cloth" in invalid(config)
    config["datasets"]["cloth"]["source"] = {"kind": "amazon2018", "path": "/x", "urls": ["https://a/b"], "file": "b"}
    assert "cloth" in invalid(config)


def test_bad_url_and_bad_checksum_are_refused(config):
    bad_url = copy.deepcopy(config)
    bad_url["datasets"]["cloth"]["source"]["urls"] = ["ftp://example.org/x.json.gz"]
    assert "ftp://example.org/x.json.gz" in invalid(bad_url)
    config["datasets"]["cloth"]["source"]["sha256"] = "not-a-digest"
    assert "not-a-digest" in invalid(config)


def test_schema_uses_only_json_schema_keywords(schema):
    keywords = {
        "$schema", "$defs", "$ref", "$id", "description", "type", "enum", "const", "default", "properties",
        "additionalProperties", "required", "items", "minItems", "maxItems", "uniqueItems", "minimum", "maximum",
        "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "pattern", "propertyNames",
        "minProperties", "maxProperties", "patternProperties", "allOf", "oneOf", "anyOf", "not", "if", "then", "else",
        "title", "examples", "$comment", "deprecated", "format",
    }  # fmt: skip

    stray: list[str] = []

    def walk(node, path):
        if isinstance(node, dict):
            stray.extend(f"{path}: {key!r}" for key in sorted(set(node) - keywords))
            for key, value in node.items():
                if key in ("properties", "$defs"):
                    for name, sub in value.items():
                        walk(sub, f"{path}.{key}.{name}")
                elif key in ("additionalProperties", "items", "if", "then", "else", "not", "propertyNames"):
                    walk(value, f"{path}.{key}")
                elif key in ("allOf", "oneOf", "anyOf"):
                    for i, sub in enumerate(value):
                        walk(sub, f"{path}.{key}[{i}]")

    walk(schema, "schema")
    assert stray == []


# --- per-dataset overrides ------------------------------------------------------------------------------------


# Table 6 of the paper, per Amazon domain: (learning_rate, max_steps, eval_steps, warmup_steps), (λ1, λ2, λ3), n.
TABLE6 = {
    "cloth": ((0.003, 1500, 50, 50), (1.0, 0.1, 1.0), 4),
    "movie": ((0.001, -1, 100, 50), (1.0, 0.1, 1.0), 4),
    "music": ((0.002, 800, 100, 100), (1.0, 0.1, 0.01), 4),
    "sport": ((0.002, 2000, 100, 50), (1.0, 0.1, 0.1), 4),
}


@pytest.mark.parametrize("domain", sorted(TABLE6))
def test_amazon_domains_train_and_distil_with_table_6(config, schema, domain):
    validate(config, SCHEMA_PATH)
    steps, weights, blocks = TABLE6[domain]
    teacher = stage_config(config, schema, domain, "teacher")
    distill = stage_config(config, schema, domain, "distill")
    assert (teacher["learning_rate"], teacher["max_steps"], teacher["eval_steps"], teacher["warmup_steps"]) == steps
    assert (distill["cos_weight"], distill["l2_weight"], distill["multi_supervision_weight"]) == weights
    assert distill["blocks"] == blocks
    assert teacher["lr_scheduler_type"] == "cosine" and teacher["max_grad_norm"] == 1.0


def test_stage_config_merges_dataset_overrides(config, schema):
    config["datasets"]["demo"]["preprocess"] = {"kcore": 10}
    config["datasets"]["demo"]["negatives"] = {"num_negatives": 99}
    validate(config, SCHEMA_PATH)
    assert stage_config(config, schema, "demo", "preprocess") == {
        "min_rating": 3,
        "kcore": 10,
        "on_bad_line": "error",
    }
    assert stage_config(config, schema, "demo", "negatives") == {"num_negatives": 99, "seed": 2025}
    # Other datasets keep the top-level settings, and the top-level section itself is untouched.
    assert stage_config(config, schema, "cloth", "preprocess")["kcore"] == 5
    assert config["preprocess"]["kcore"] == 5


def test_stage_config_without_override_is_the_top_level_section(config, schema):
    validate(config, SCHEMA_PATH)
    assert stage_config(config, schema, "music", "preprocess") == config["preprocess"]
    assert stage_config(config, schema, "music", "preprocess") is not config["preprocess"]


def test_bad_override_names_the_full_key(config, schema):
    config["datasets"]["demo"]["preprocess"] = {"kcore": "ten"}
    validate(config, SCHEMA_PATH)  # overrides are partial; they are checked after merging
    with pytest.raises(ConfigError) as err:
        stage_config(config, schema, "demo", "preprocess")
    assert "datasets.demo.preprocess.kcore" in str(err.value)
    assert "'ten'" in str(err.value)


def test_unknown_override_key_names_the_section(config, schema):
    config["datasets"]["sport"]["negatives"] = {"num_negativez": 5}
    validate(config, SCHEMA_PATH)
    with pytest.raises(ConfigError) as err:
        stage_config(config, schema, "sport", "negatives")
    assert "datasets.sport.negatives" in str(err.value) and "num_negativez" in str(err.value)


def test_unknown_dataset_lists_the_known_ones(config, schema):
    validate(config, SCHEMA_PATH)
    with pytest.raises(ConfigError, match=r"unknown dataset 'books'.*cloth, demo, ml100k, movie, music, sport"):
        stage_config(config, schema, "books", "preprocess")


# --- snakemake itself refuses a bad config before any job runs ------------------------------------------------


def dry_run(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess[str]:
    """`snakemake -n` in `workdir`, with `config` as its config.yaml and `args` (--config, targets) added."""
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    command = [SNAKEMAKE, "-n", "--cores", "1", *args]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=120)


def test_snakemake_dry_run_of_the_shipped_config_succeeds(tmp_path, config):
    proc = dry_run(copy_workflow(tmp_path), config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "synthesize" in proc.stdout + proc.stderr


@pytest.mark.parametrize("switch", [False, True])
def test_the_authors_sasrec_row_joins_the_table_only_when_asked(tmp_path, config, switch):
    """`report.sasrec_authors` adds SASRec trained by the authors' protocol as a row of its own; the LLM stages
    keep reading the project's SASRec table either way."""
    config["datasets"]["demo"]["report"] = {"sasrec_authors": switch}
    proc = dry_run(copy_workflow(tmp_path), config, "results/demo/metrics.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    planned = re.findall(r"^(?:local)?rule (\w+):", proc.stdout, re.M)
    assert ("sasrec_authors" in planned) is switch
    if switch:
        assert "results/demo/sasrec_authors/metrics.json" in proc.stdout
    teacher = proc.stdout[proc.stdout.index("rule teacher:") :].split("\n\n")[0]
    assert "results/demo/sasrec/item_embeddings.safetensors" in teacher and "sasrec_authors" not in teacher


def test_snakemake_refuses_a_wrong_type_before_any_job(tmp_path, config):
    config["preprocess"]["kcore"] = "x"
    proc = dry_run(copy_workflow(tmp_path), config)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "kcore" in output and "'x' is not of type 'integer'" in output
    assert "Building DAG" not in output
    assert not (tmp_path / "results").exists()


def test_snakemake_refuses_a_bad_dataset_override(tmp_path, config):
    config["datasets"]["demo"]["preprocess"] = {"kcore": "x"}
    proc = dry_run(copy_workflow(tmp_path), config)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "datasets.demo.preprocess.kcore" in output
    assert not (tmp_path / "results").exists()


def test_student_inherits_unset_training_settings_from_the_teacher(config, schema):
    config["teacher"]["weight_decay"] = 0.01
    config["datasets"]["demo"]["student"] = {"max_steps": 10}
    validate(config, SCHEMA_PATH)
    student = stage_config(config, schema, "demo", "student")
    # From the top-level teacher, from the demo's own teacher, and the student's own.
    assert student["weight_decay"] == 0.01 and student["learning_rate"] == 0.003 and student["max_steps"] == 10
    assert student["layers"] == 4  # the student's own default, never the teacher's layers
    assert stage_config(config, schema, "demo", "teacher")["max_steps"] == 300  # the demo's teacher


def test_student_schema_lists_its_keys(config, schema):
    """The student accepts exactly the teacher's training settings and its own `layers`."""
    assert set(schema["$defs"]["student"]["properties"]) == set(schema["$defs"]["teacher"]["properties"])
    config["student"]["lora_r"] = 4
    assert "'lora_r' was unexpected" in invalid(config)


def test_old_distill_mode_key_is_refused(config):
    """`distill.mode` meant two things; the report's students now live in `report.students`."""
    config["distill"]["mode"] = "both"
    assert "'mode' was unexpected" in invalid(config)


# --- settings that contradict each other or the backbone: refused when the DAG is built ------------------------


@pytest.mark.parametrize(
    ("demo", "message"),
    [
        (
            {"teacher": {"layers": 12}},
            "datasets.demo.teacher.layers: 12 layers, but the backbone has only 8 decoder layers; "
            "set datasets.demo.teacher.layers to at most 8, or a deeper datasets.demo.backbone",
        ),
        (
            {"report": {"students": ["student", "student_t16"]}},
            "datasets.demo.report.students: 16 layers, but the backbone has only 8 decoder layers",
        ),
        (
            {"report": {"layer_sweep": [2, 16]}},
            "datasets.demo.report.layer_sweep: 16 layers, but the backbone has only 8",
        ),
        ({"student": {"layers": 8}}, "student.layers = 8: the student must be smaller than its teacher"),
        ({"distill": {"blocks": 3}}, "distill.blocks = 3 does not divide"),
        ({"sasrec": {"heads": 3}}, "datasets.demo.sasrec: hidden = 128 must be divisible by heads = 3"),
    ],
    ids=[
        "teacher-deeper-than-backbone",
        "student-of-a-teacher-deeper-than-backbone",
        "sweep-deeper-than-backbone",
        "student-not-smaller",
        "blocks",
        "heads",
    ],
)
def test_contradicting_settings_are_refused(config, schema, demo, message):
    for stage, values in demo.items():
        config["datasets"]["demo"].setdefault(stage, {}).update(values)
    validate(config, SCHEMA_PATH)
    stage = "sasrec" if "sasrec" in demo else "student"
    with pytest.raises(ConfigError) as info:
        check_dataset(config, schema, "demo", stage)
    assert message in str(info.value)


def test_contradicting_settings_fail_the_dry_run(tmp_path, config):
    """The check runs while the DAG is built: a dry run fails with the message and writes nothing."""
    config["datasets"]["demo"]["teacher"]["layers"] = 12
    proc = dry_run(copy_workflow(tmp_path), config)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "datasets.demo.teacher.layers: 12 layers, but the backbone has only 8" in output, output[-2000:]
    assert not (tmp_path / "results").exists()


def test_the_shard_count_is_refused_under_a_dataset(tmp_path, config):
    """Snakemake's scattergather has one count per workflow: a dataset's own `recommend.shards` would be ignored."""
    config["datasets"]["demo"]["recommend"] = {"k": 5, "shards": 2}
    proc = dry_run(copy_workflow(tmp_path), config)
    assert proc.returncode != 0
    message = "config key datasets.demo.recommend.shards: the shard count is one for the whole workflow"
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_a_dataset_used_only_for_its_data_is_not_refused(config, schema):
    """Layer counts are checked for the jobs that read them, not for a dataset's data stages."""
    config["datasets"]["demo"]["teacher"]["layers"] = 12
    validate(config, SCHEMA_PATH)
    check_dataset(config, schema, "demo", "sasrec")
    with pytest.raises(ConfigError):
        check_dataset(config, schema, "demo", "teacher")


def test_a_local_checkpoint_depth_is_read_from_its_config(tmp_path, config):
    checkpoint = tmp_path / "llama"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"num_hidden_layers": 6}))
    config["datasets"]["demo"]["backbone"] = {"path": str(checkpoint)}
    (tmp_path / "wf").mkdir()
    proc = dry_run(copy_workflow(tmp_path / "wf"), config)
    assert "datasets.demo.teacher.layers: 8 layers, but the backbone has only 6" in proc.stdout + proc.stderr


def test_a_new_entry_with_only_a_source_fits_the_default_backbone(config, schema):
    """The top-level defaults fit the default backbone (tiny, 8 layers); the 7B domains carry their own depth."""
    config["datasets"]["mine"] = {"source": {"kind": "ratings_csv", "path": "data/mine.csv"}}
    validate(config, SCHEMA_PATH)
    for stage in ("sasrec", "teacher", "student"):
        check_dataset(config, schema, "mine", stage)
    backbone = stage_config(config, schema, "mine", "backbone")
    assert stage_config(config, schema, "mine", "teacher")["layers"] == backbone_depth(backbone) == 8
    assert schema["$defs"]["teacher"]["properties"]["layers"]["default"] == 8
    for domain in ("cloth", "movie", "music", "sport"):
        assert SHIPPED["datasets"][domain]["teacher"]["layers"] == 32, domain


# --- --config on the command line --------------------------------------------------------------------------


def test_untyped_command_line_values_are_typed_by_the_schema(schema):
    """Snakemake reads nested --config values as strings; the schema says which are numbers, lists, booleans."""
    untyped = {
        "distill": {"cos_weight": "0.5", "teacher_quantization": "none"},
        "report": {"layer_sweep": ["1", "2"], "ablation": "true"},
        "backbone": {"preset": "null"},
        "datasets": {
            "demo": {
                "source": {"kind": "synthetic", "users": "300", "transition_prob": "0.5"},
                "teacher": {"layers": "4", "lora": {"r": "8", "target_modules": ["q_proj"]}},
                "prompt": {"prefix": "1"},  # a string the schema wants: stays one
            }
        },
    }
    assert typed_overrides(untyped, schema) == {
        "distill": {"cos_weight": 0.5, "teacher_quantization": "none"},
        "report": {"layer_sweep": [1, 2], "ablation": True},
        "backbone": {"preset": None},
        "datasets": {
            "demo": {
                "source": {"kind": "synthetic", "users": 300, "transition_prob": 0.5},
                "teacher": {"layers": 4, "lora": {"r": 8, "target_modules": ["q_proj"]}},
                "prompt": {"prefix": "1"},
            }
        },
    }
    # A value that is wrong either way is left as given, for validation to name it.
    assert typed_overrides({"distill": {"cos_weight": "heavy"}}, schema) == {"distill": {"cos_weight": "heavy"}}


STUDENT = "results/demo/student/metrics.json"


def test_numeric_config_overrides_on_the_command_line_reach_the_rules(tmp_path, config):
    """`--config 'distill={cos_weight: 0.5}'` validates, and a typed value reaches the checks of the DAG."""
    workdir = copy_workflow(tmp_path)
    overrides = ("distill={cos_weight: 0.5, l2_weight: 0}", "datasets={demo: {teacher: {max_steps: 7}}}")
    proc = dry_run(workdir, config, "--config", *overrides, "--", STUDENT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    proc = dry_run(workdir, config, "--config", "datasets={demo: {teacher: {layers: 12}}}", "--", STUDENT)
    assert "datasets.demo.teacher.layers: 12 layers, but the backbone has only 8" in proc.stdout + proc.stderr


# --- numbers in YAML: an exponent without a dot, a value of the right type out of range, NaN and infinities ------


def test_an_exponent_without_a_dot_is_a_number_in_the_file_and_on_the_command_line(tmp_path, config, schema):
    """YAML 1.1 (PyYAML, so Snakemake) reads `1e-4` as a string; wherever the schema wants a number, it is one."""
    config["teacher"]["learning_rate"] = "1e-4"  # written bare, `learning_rate: 1e-4`, as a person writes it
    config["datasets"]["demo"]["distill"] = {"cos_weight": "5e-1"}
    config["datasets"]["demo"]["source"]["transition_prob"] = "6E-1"
    config["datasets"]["demo_lr"] = {"base": "demo", "teacher": {"learning_rate": "2e-4"}}
    workdir = copy_workflow(tmp_path)
    proc = dry_run(workdir, config, "results/demo_lr/student/metrics.json")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    written = (workdir / "config.yaml").read_text()
    assert "learning_rate: 1e-4" in written and "cos_weight: 5e-1" in written and "learning_rate: 2e-4" in written
    loaded = load_config([workdir / "config.yaml"])  # the config Snakemake ran with
    assert loaded["teacher"]["learning_rate"] == 1e-4 and loaded["datasets"]["demo"]["source"]["transition_prob"] == 0.6
    assert stage_config(loaded, schema, "demo", "distill")["cos_weight"] == 0.5
    assert stage_config(loaded, schema, "demo_lr", "teacher")["learning_rate"] == 2e-4
    assert stage_config(loaded, schema, "demo_lr", "distill")["cos_weight"] == 0.5  # from its base
    overrides = ("teacher={learning_rate: 1e-4}", "datasets={demo: {teacher: {adam_epsilon: 1E-6}}}")
    proc = dry_run(workdir, SHIPPED, "--config", *overrides, "--", STUDENT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert typed_overrides({"teacher": {"learning_rate": "1e-4", "layers": "1e-1", "batch_size": "1e3"}}, schema) == {
        # no integer either way (1e3 reads as the float 1000.0): left for validation to name
        "teacher": {"learning_rate": 1e-4, "layers": "1e-1", "batch_size": "1e3"}
    }


@pytest.mark.parametrize(
    ("change", "override", "message"),
    [
        ({"teacher": {"batch_size": 0}}, "teacher={batch_size: 0}", "ValidationError: 0 is less than the minimum of 1"),
        (
            {"datasets": {"demo": {"teacher": {"batch_size": 0}}}},
            "datasets={demo: {teacher: {batch_size: 0}}}",
            "config key datasets.demo.teacher.batch_size: 0 is less than the minimum of 1",
        ),
    ],
    ids=["top-level", "dataset"],
)
def test_a_command_line_value_breaking_a_rule_is_refused_as_in_the_file(
    tmp_path, config, schema, change, override, message
):
    """`--config 'teacher={batch_size: 0}'` is an integer below the minimum, as in the file, not "not of type"."""
    workdir = copy_workflow(tmp_path)
    on_command_line = dry_run(workdir, config, "--config", override, "--", STUDENT)
    from_file = dry_run(workdir, deep_merge(config, change), STUDENT)
    for proc in (on_command_line, from_file):
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert message in output and "is not of type" not in output, output[-2000:]
        assert "Building DAG" not in output and not (workdir / "results").exists()
    assert typed_overrides({"teacher": {"batch_size": "0"}}, schema) == {"teacher": {"batch_size": 0}}


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("change", "override", "message"),
    [
        ({"distill": {"cos_weight": NAN}}, None, "config key distill.cos_weight: nan"),
        (
            {"datasets": {"demo": {"distill": {"cos_weight": INF}}}},
            None,
            "config key datasets.demo.distill.cos_weight: inf",
        ),
        ({}, "distill={cos_weight: .nan}", "config key distill.cos_weight: nan"),
        ({}, "datasets={demo: {distill: {l2_weight: -.inf}}}", "config key datasets.demo.distill.l2_weight: -inf"),
    ],
    ids=["file", "file-dataset", "command-line", "command-line-dataset"],
)
def test_non_finite_numbers_are_refused_naming_the_key(tmp_path, config, change, override, message):
    """A NaN weight would switch its term off silently, and make metrics.json invalid JSON."""
    workdir = copy_workflow(tmp_path)
    proc = dry_run(workdir, deep_merge(config, change), *(["--config", override, "--"] if override else []), STUDENT)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"{message} is not a finite number; expected a finite number" in output, output[-2000:]
    assert "Building DAG" not in output and not (workdir / "results").exists()
    if not override:  # `python -m slmrec provenance` and `compare` read the file as Snakemake does
        with pytest.raises(ConfigError, match=f"^{re.escape(message)} is not a finite number"):
            load_config([workdir / "config.yaml"])


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"report": {"layer_sweep": [1, INF]}}, "report.layer_sweep.1"),
        ({"datasets": {"demo": {"source": {"transition_prob": NAN}}}}, "datasets.demo.source.transition_prob"),
        ({"datasets": {"demo_v": {"base": "demo", "teacher": {"epochs": -INF}}}}, "datasets.demo_v.teacher.epochs"),
    ],
)
def test_non_finite_numbers_in_lists_sources_and_variants_are_refused(config, schema, change, key):
    with pytest.raises(ConfigError, match=f"^config key {re.escape(key)}: -?(nan|inf) is not a finite number"):
        prepare_config(deep_merge(config, change), schema)
