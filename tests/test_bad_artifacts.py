"""Corrupt intermediate artifacts: every reader names the file and the command that remakes it, and
`python -m slmrec provenance` flags any recorded output (not only the traced one) that changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import torch
from helpers_data import (
    backbone_settings,
    data_inputs,
    llm_config,
    llm_outputs,
    make_dataset,
    prompt_settings,
    sasrec_config,
    sasrec_outputs,
    sasrec_params,
    stage_call,
)

from slmrec import provenance as provenance_module
from slmrec.__main__ import main
from slmrec.call import StageCall
from slmrec.errors import ArtifactError
from slmrec.io import read_json, utc_now, write_json, write_manifest
from slmrec.launch import call_stage
from slmrec.models.distill import TeacherStates
from slmrec.models.llmrec import LLMRecConfig, build_llmrec, load_llmrec
from slmrec.provenance import stale, trace

EVAL = {"full_ranking": False}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> SimpleNamespace:
    """Real artifacts: a small dataset and one short SASRec run on it (model, item table, metrics row)."""
    root = tmp_path_factory.mktemp("made")
    data = make_dataset(root / "data", users=80, items=80, num_negatives=20, min_length=6, max_length=15)
    sasrec = sasrec_outputs(root / "sasrec")
    params = sasrec_params(root / "checkpoints", sasrec_config(epochs=1))
    call_stage(stage_call("sasrec", data_inputs(data), sasrec, params))
    return SimpleNamespace(data=data, sasrec=sasrec)


def truncated(source: str | Path, directory: Path) -> str:
    """A copy of `source` under `directory`, cut to half its length as a killed copy would leave it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / Path(source).name
    content = Path(source).read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return str(path)


def assert_names_the_artifact(error: ArtifactError, path: str | Path) -> None:
    message = str(error)
    assert str(path) in message
    assert "truncated or corrupt" in message
    assert f"--force {path}" in message


def assert_stops_and_writes_nothing(call: StageCall, broken: str) -> None:
    with pytest.raises(ArtifactError) as err:
        call_stage(call)
    assert_names_the_artifact(err.value, broken)
    assert not [p for p in call.output.values() if Path(p).exists()]


def sasrec_call(inputs: dict[str, str], out: Path) -> StageCall:
    return stage_call("sasrec", inputs, sasrec_outputs(out), sasrec_params(out / "ckpt"))


# --- stages --------------------------------------------------------------------------------------


def test_truncated_item_table_stops_the_teacher(made, tmp_path, backbone):
    broken = truncated(made.sasrec.item_embeddings, tmp_path / "sasrec")
    params = {
        "target": "teacher",
        "teacher": {k: v for k, v in llm_config().items() if k != "layers"},
        "layers": 2,
        "backbone": backbone_settings(),
        "prompt": prompt_settings(),
        "evaluate": EVAL,
        "checkpoints": str(tmp_path / "ckpt"),
    }
    inputs = {**data_inputs(made.data), "item_embeddings": broken, "backbone": backbone}
    assert_stops_and_writes_nothing(stage_call("teacher", inputs, llm_outputs(tmp_path / "teacher"), params), broken)


def test_truncated_negatives_stop_sasrec(made, tmp_path):
    broken = truncated(made.data.negatives, tmp_path / "data")
    inputs = {**data_inputs(made.data), "negatives": broken}
    assert_stops_and_writes_nothing(sasrec_call(inputs, tmp_path / "sasrec"), broken)


def test_truncated_stats_stop_sasrec(made, tmp_path):
    broken = truncated(made.data.stats, tmp_path / "data")
    inputs = {**data_inputs(made.data), "stats": broken}
    assert_stops_and_writes_nothing(sasrec_call(inputs, tmp_path / "sasrec"), broken)


def test_truncated_splits_stop_the_negatives_stage(made, tmp_path):
    broken = truncated(made.data.splits, tmp_path / "data")
    users = tmp_path / "users.parquet"
    user_ids = pl.read_parquet(made.data.splits)["user"]
    pl.DataFrame({"user": user_ids, "user_id": user_ids.cast(pl.String)}).write_parquet(users)
    inputs = {"splits": broken, "stats": made.data.stats, "user_ids": users}
    out = SimpleNamespace(negatives=str(tmp_path / "negatives.parquet"), manifest=str(tmp_path / "manifest.json"))
    params = {"negatives": {"num_negatives": 20, "seed": 1}}
    assert_stops_and_writes_nothing(stage_call("negatives", inputs, out, params), broken)


def test_truncated_metrics_row_stops_the_metrics_stage(made, tmp_path):
    broken = truncated(made.sasrec.metrics, tmp_path / "sasrec")
    out = SimpleNamespace(table=str(tmp_path / "metrics.json"), manifest=str(tmp_path / "manifest.json"))
    inputs = {"sasrec": broken, "stats": made.data.stats}
    assert_stops_and_writes_nothing(
        stage_call("metrics", inputs, out, {"dataset": "demo", "headline": ["student", "teacher"]}), broken
    )


def test_truncated_table_stops_the_report(made, tmp_path):
    table = tmp_path / "table.json"
    write_json(table, {"dataset": "demo", "rows": [read_json(made.sasrec.metrics)]})
    broken = truncated(table, tmp_path / "results")
    names = {"report": "report.md", "curves": "training_curves.png", "layers": "layer_sweep.png"}
    out = SimpleNamespace(**{key: str(tmp_path / name) for key, name in names.items()})
    inputs = {"table": broken, "train_logs": [made.sasrec.train_log], "sweep": []}
    assert_stops_and_writes_nothing(StageCall("report", inputs, vars(out), {"synthetic": True}), broken)


# --- a saved LLM recommender (the student stage loads its teacher this way) ----------------------


@pytest.mark.parametrize("name", ["trainable.safetensors", "config.json"])
def test_truncated_llmrec_files_name_themselves(made, tmp_path, backbone, name):
    table = torch.randn(made.data.num_items + 1, 16, generator=torch.Generator().manual_seed(0))
    config = LLMRecConfig.from_settings(backbone, backbone_settings(), prompt_settings(), llm_config(), 2, table)
    build_llmrec(config, table, seed=0).save_artifacts(vars(llm_outputs(tmp_path / "saved")))
    saved = tmp_path / "teacher"
    shutil.copytree(tmp_path / "saved", saved)
    broken = truncated(saved / name, saved)
    with pytest.raises(ArtifactError) as err:
        load_llmrec(saved, table)
    assert_names_the_artifact(err.value, broken)


def test_a_model_saved_before_max_len_was_recorded_says_to_retrain_it(tmp_path, backbone):
    """A model directory from an older revision lacks `max_len` in its config: loading it names what is missing and
    what to rerun, rather than failing inside the dataclass."""
    table = torch.randn(11, 16, generator=torch.Generator().manual_seed(0))
    config = LLMRecConfig.from_settings(backbone, backbone_settings(), prompt_settings(), llm_config(), 2, table)
    build_llmrec(config, table, seed=0).save_artifacts(vars(llm_outputs(tmp_path)))
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "max_len"}))
    with pytest.raises(ArtifactError, match=r"lacks \['max_len'\].*rerun the stage that made it"):
        load_llmrec(tmp_path, table)
    assert load_llmrec(tmp_path, table, max_len=20).config.max_len == 20  # what a caller that knows it may pass


def test_truncated_teacher_states_name_themselves(tmp_path):
    path = tmp_path / "teacher" / "states.safetensors"
    path.parent.mkdir()
    TeacherStates(torch.zeros(3, 2, 8), 4, [2, 4], "digest", {"total": 1}).save(path)
    assert TeacherStates.load(path).layers == [2, 4]
    broken = truncated(path, path.parent)
    with pytest.raises(ArtifactError) as err:
        TeacherStates.load(broken)
    assert_names_the_artifact(err.value, broken)


def test_a_missing_artifact_stays_a_file_not_found_error(made, tmp_path):
    inputs = {**data_inputs(made.data), "negatives": str(tmp_path / "absent.parquet")}
    with pytest.raises(FileNotFoundError):
        call_stage(sasrec_call(inputs, tmp_path / "sasrec"))


# --- provenance ----------------------------------------------------------------------------------


@pytest.fixture
def recorded(tmp_path, monkeypatch) -> Path:
    """Two manifests written as the stages write them: data (splits, stats) -> sasrec (metrics, item table)."""
    monkeypatch.chdir(tmp_path)
    files = {
        "results/demo/data/splits.parquet": b"PAR1 splits PAR1",
        "results/demo/data/stats.json": b'{"items": 3}\n',
        "results/demo/sasrec/metrics.json": b'{"model": "SASRec"}\n',
        "results/demo/sasrec/item_embeddings.safetensors": bytes(range(256)),
    }
    for path, content in files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(content)
    data, sasrec = [p for p in files if "/data/" in p], [p for p in files if "/sasrec/" in p]
    record = {"config": {}, "started": utc_now()}
    write_manifest("results/demo/data/manifest.json", stage="preprocess", inputs=[], outputs=data, **record)
    write_manifest("results/demo/sasrec/manifest.json", stage="sasrec", inputs=data[:1], outputs=sasrec, **record)
    return tmp_path


def provenance(capsys) -> tuple[int, str]:
    code = main(["provenance", "results/demo/sasrec/metrics.json"])
    return code, capsys.readouterr().out


def test_provenance_is_up_to_date_when_every_output_matches(recorded, capsys):
    code, out = provenance(capsys)
    assert code == 0 and "up to date" in out


@pytest.mark.parametrize(
    "sibling",
    [
        "results/demo/sasrec/item_embeddings.safetensors",
        "results/demo/data/stats.json",  # beside the traced file's input, in the manifest one stage up
    ],
)
def test_provenance_flags_a_truncated_sibling_output(recorded, capsys, sibling):
    path = Path(sibling)
    path.write_bytes(path.read_bytes()[:5])
    assert stale(trace("results/demo/sasrec/metrics.json"))
    code, out = provenance(capsys)
    assert code == 1 and "STALE" in out and "up to date" not in out
    assert f"output {sibling} changed since it was recorded" in out
    assert f"snakemake --cores 1 results/demo/sasrec/metrics.json --forcerun {sibling}" in out


def test_provenance_flags_a_missing_sibling_output(recorded, capsys):
    Path("results/demo/sasrec/item_embeddings.safetensors").unlink()
    code, out = provenance(capsys)
    assert code == 1
    assert "output results/demo/sasrec/item_embeddings.safetensors is missing" in out


def test_provenance_flags_a_dataset_directory_copied_from_another_dataset(recorded, capsys):
    """Another dataset's `sasrec/`, copied in with its manifest (written as a stage writes it): STALE, not
    "up to date", though every checksum in the copied manifest matches its own dataset's files."""
    other = Path("results/other/sasrec")
    other.mkdir(parents=True)
    outputs = {"metrics": other / "metrics.json", "manifest": other / "manifest.json"}
    outputs["metrics"].write_text('{"model": "SASRec", "dataset": "other"}\n')
    wildcards = {"dataset": "other"}
    StageCall("sasrec", {}, {k: str(v) for k, v in outputs.items()}, {}, wildcards=wildcards).write_manifest()
    shutil.rmtree("results/demo/sasrec")
    shutil.copytree(other, "results/demo/sasrec")
    code, out = provenance(capsys)
    assert code == 1 and "STALE" in out and "up to date" not in out
    made_for = "was made for results/other/sasrec/manifest.json (dataset other): a copy from elsewhere"
    assert f"manifest results/demo/sasrec/manifest.json {made_for}" in out
    assert "--forcerun results/demo/sasrec/metrics.json" in out


def test_provenance_flags_a_file_no_manifest_records(recorded, capsys):
    Path("results/demo/data/manifest.json").unlink()
    code, out = provenance(capsys)
    assert code == 1 and "STALE" in out
    assert "no manifest under results records results/demo/data/splits.parquet, which stage 'sasrec' read" in out
    assert "--forcerun results/demo/data/splits.parquet" in out


def test_provenance_never_reads_an_output_outside_the_results(recorded, capsys, monkeypatch):
    manifest = Path("results/demo/sasrec/manifest.json")
    record = json.loads(manifest.read_text())
    record["outputs"]["/etc/passwd"] = "0" * 64
    manifest.write_text(json.dumps(record))
    hashed = []
    monkeypatch.setattr(provenance_module, "sha256_file", lambda path: hashed.append(str(path)) or "0" * 64)
    code, out = provenance(capsys)
    assert code == 1 and "STALE" in out
    assert f"manifest {manifest} names an output outside results: /etc/passwd (not read)" in out
    assert "/etc/passwd" not in hashed and "--forcerun /etc" not in out
