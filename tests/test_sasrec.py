"""SASRec: padding and causal masking, the every-position objective, and the `sasrec` stage end to end."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
from helpers_data import (
    SASREC_OUTPUTS,
    data_inputs,
    make_dataset,
    sasrec_config,
    sasrec_outputs,
    sasrec_params,
    stage_call,
)
from helpers_training import Killed, kill_at
from safetensors import safe_open
from safetensors.torch import load_file

from slmrec import training
from slmrec.batching import pad_left
from slmrec.data.samples import SequenceDataset, load_eval_splits, training_sequences, windows
from slmrec.errors import DataError
from slmrec.evaluate import evaluate
from slmrec.io import write_json
from slmrec.metrics import METRIC_NAMES, MetricsRow
from slmrec.models.sasrec import SASRec, SASRecConfig, load_item_embeddings
from slmrec.stages import popularity
from slmrec.stages import sasrec as stage
from slmrec.training import NonFiniteLossError

NUM_ITEMS = 30
MAX_LEN = 12


def make_model(seed: int = 0, dropout: float = 0.0, layers: int = 2, heads: int = 2) -> SASRec:
    torch.manual_seed(seed)
    model = SASRec(SASRecConfig(NUM_ITEMS, hidden=16, layers=layers, heads=heads, dropout=dropout, max_len=MAX_LEN))
    return model.eval()


HISTORIES = [[3, 7, 1, 9, 4], [12, 5], [8], [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28]]


# --- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layers,heads", [(1, 1), (2, 2)])
def test_more_left_padding_changes_nothing(layers, heads):
    model = make_model(layers=layers, heads=heads)
    with torch.no_grad():
        reference = model.user_vectors(pad_left(HISTORIES, MAX_LEN))
        for length in (5, 8, MAX_LEN - 1):
            short = [h[-length:] for h in HISTORIES]
            expected = model.user_vectors(pad_left(short, MAX_LEN))
            for extra in (0, 3, 10):
                # Left padding beyond max_len too: the model keeps the last max_len positions.
                got = model.user_vectors(pad_left(short, length + extra))
                assert torch.allclose(got, expected, atol=1e-5), (length, extra)
        # Histories longer than the window: the input is cut to the last max_len items.
        assert torch.allclose(model.user_vectors(pad_left(HISTORIES, 2 * MAX_LEN)), reference, atol=1e-6)
        # Each row on its own equals the batched row (padding in other rows cannot leak in).
        for row, history in enumerate(HISTORIES):
            alone = model.user_vectors(pad_left([history], MAX_LEN))[0]
            assert torch.allclose(alone, reference[row], atol=1e-5)


def test_hidden_states_are_causal():
    model = make_model()
    items = pad_left([[3, 7, 1, 9, 4, 11, 2]], MAX_LEN)
    first = MAX_LEN - 7
    with torch.no_grad():
        base = model.encode(items)
        for changed in range(first + 1, MAX_LEN):
            other = items.clone()
            other[0, changed] = 29 if items[0, changed] != 29 else 28
            hidden = model.encode(other)
            assert torch.allclose(hidden[0, :changed], base[0, :changed], atol=1e-6), changed
            assert not torch.allclose(hidden[0, changed], base[0, changed], atol=1e-6), changed


def test_padded_positions_are_zero_and_nothing_is_nan():
    items = pad_left([[4, 5, 6], [], [1]], MAX_LEN)
    for train_mode in (False, True):
        model = make_model(dropout=0.3)
        model.train(train_mode)
        hidden = model.encode(items)
        assert torch.isfinite(hidden).all()
        assert (hidden[items == 0] == 0).all()
        assert (hidden[1] == 0).all()  # an all-padding row
        assert hidden[0, -3:].abs().sum(-1).gt(0).all()
    # Gradients stay finite too when a row is only padding.
    model = make_model(dropout=0.3).train()
    labels = pad_left([[5, 6, 7], [], [2]], MAX_LEN)
    model(items, labels)["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# Sequences of lengths 6, 3, 2 and 15 (the last is longer than the max_len window).
SEQUENCES = [h + [NUM_ITEMS] for h in HISTORIES]


def _training_batch(sequences):
    dataset = SequenceDataset(sequences, MAX_LEN)
    return {k: torch.stack([dataset[i][k] for i in range(len(dataset))]) for k in ("input_ids", "labels")}


def _per_prefix_losses(model, sequences):
    """One sample per prefix: encode the prefix alone, as inference would, and score its next item."""
    losses = []
    with torch.no_grad():
        for seq in sequences:
            # Training sees the last max_len inputs; position t's context is that window up to t.
            inputs, targets = seq[:-1][-MAX_LEN:], seq[1:][-MAX_LEN:]
            for t in range(len(inputs)):
                user = model.user_vectors(pad_left([inputs[: t + 1]], MAX_LEN))
                logits = user @ model.item_table.T
                logits[:, 0] = float("-inf")
                losses.append(F.cross_entropy(logits, torch.tensor([targets[t]])))
    assert len(losses) == 5 + 2 + 1 + MAX_LEN
    return torch.stack(losses)


def test_every_position_loss_equals_mean_of_per_prefix_losses():
    """One causal forward pass over whole sequences = one sample per prefix, token-weighted."""
    model = make_model()
    with torch.no_grad():
        batched = model(**_training_batch(SEQUENCES))["loss"]
    assert torch.allclose(batched, _per_prefix_losses(model, SEQUENCES).mean(), atol=1e-5)


def test_appending_an_item_leaves_earlier_hidden_states_unchanged():
    model = make_model()
    with torch.no_grad():
        short = model.encode(pad_left([[3, 7, 1, 9]], MAX_LEN))
        longer = model.encode(pad_left([[3, 7, 1, 9, 4]], MAX_LEN))
    assert torch.allclose(short[0, -4:], longer[0, -5:-1], atol=1e-5)


def test_batched_loss_is_token_weighted_cross_entropy_at_every_real_position():
    """The objective, given the hidden states: next-item CE at each real position, padding ignored,
    item 0 never a candidate, averaged over tokens (not over sequences)."""
    model = make_model()
    batch = _training_batch(SEQUENCES)
    with torch.no_grad():
        out = model(**batch)
        hidden = model.encode(batch["input_ids"])
        assert torch.equal(out["hidden"], hidden)
        losses = []
        for row in range(len(SEQUENCES)):
            for col in range(MAX_LEN):
                label = int(batch["labels"][row, col])
                if label == 0:
                    assert batch["input_ids"][row, col] == 0
                    continue
                logits = hidden[row, col] @ model.item_table.T
                logits[0] = float("-inf")
                losses.append(F.cross_entropy(logits[None], torch.tensor([label])))
    losses = torch.stack(losses)
    assert len(losses) == 5 + 2 + 1 + MAX_LEN
    assert torch.allclose(out["loss"], losses.mean(), atol=1e-5)
    # A per-sequence mean differs here, so the token-weighted check is sharp.
    per_sequence = torch.stack([chunk.mean() for chunk in losses.split([5, 2, 1, MAX_LEN])])
    assert not torch.allclose(out["loss"], per_sequence.mean(), atol=1e-4)
    # Padding content cannot matter: labels 0 are ignored and padded inputs are masked.
    with torch.no_grad():
        again = model(batch["input_ids"], batch["labels"])["loss"]
    assert torch.equal(again, out["loss"])


def test_sequence_dataset_shifts_by_one():
    dataset = SequenceDataset([[1, 2, 3, 4], [5, 6, 7]], 5)
    assert dataset[0]["input_ids"].tolist() == [0, 0, 1, 2, 3]
    assert dataset[0]["labels"].tolist() == [0, 0, 2, 3, 4]
    assert dataset[1]["input_ids"].tolist() == [0, 0, 0, 5, 6]
    assert dataset[1]["labels"].tolist() == [0, 0, 0, 6, 7]
    assert len(dataset) == 2


def test_sequence_dataset_last_only_keeps_each_users_last_target():
    """The authors' protocol: one target per user, the last training item, read after the items before it."""
    dataset = SequenceDataset([[1, 2, 3, 4], [5, 6, 7]], 5, last_only=True)
    assert dataset[0]["input_ids"].tolist() == [0, 0, 1, 2, 3]
    assert dataset[0]["labels"].tolist() == [0, 0, 0, 0, 4]
    assert dataset[1]["labels"].tolist() == [0, 0, 0, 0, 7]


def test_authors_protocol_trains_its_own_row_with_its_settings(tiny, tmp_path, monkeypatch):
    """`sasrec_authors`: the section's `authors_protocol` settings replace its own, and only each user's last
    training item is a target."""
    seen = []
    real = SequenceDataset.__init__

    def recording(self, sequences, max_len, last_only=False):
        real(self, sequences, max_len, last_only)
        seen.append((len(sequences), max_len, last_only))

    monkeypatch.setattr(SequenceDataset, "__init__", recording)
    protocol = {"max_len": 7, "dropout": 0.5, "lr": 0.001, "epochs": 1}
    cfg = sasrec_config(authors_protocol=protocol)
    stage.run(sasrec_call(tiny, tmp_path, cfg, authors=True))
    row = MetricsRow.read(tmp_path / "metrics.json")
    assert row.model == "SASRec (authors' protocol)" and row.target == "sasrec_authors"
    users = pl.read_parquet(tiny.splits).height
    assert seen == [(users, 7, True)]  # one row per user, no windows
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        config = json.loads(weights.metadata()["config"])
    assert config["max_len"] == 7 and config["dropout"] == 0.5


def test_windows_make_every_item_after_the_first_a_target_once():
    """Long histories are cut into windows; each target keeps the inputs just before it in its window."""
    max_len = 4
    for length in (2, 3, 5, 6, 9, 10, 14):
        seq = list(range(1, length + 1))
        rows = [seq[w.start : w.end] for w in windows([seq], max_len)]
        assert rows[0] == seq[-max_len - 1 :]  # the newest window is the row a single-window user gets
        dataset = SequenceDataset(rows, max_len)
        targets = []
        for row in range(len(dataset)):
            inputs, labels = dataset[row]["input_ids"].tolist(), dataset[row]["labels"].tolist()
            for col, label in enumerate(labels):
                if label:
                    # The target's inputs are the items just before it, in order.
                    real = [item for item in inputs[: col + 1] if item]
                    assert real == seq[label - 1 - len(real) : label - 1], (length, row, col)
                    targets.append(label)
        assert sorted(targets) == seq[1:], length
    assert windows([[7]], max_len) == []  # a single item has nothing to predict


def test_weights_start_small_and_normal():
    """N(0, 0.02) weights and zero biases; the padding row stays zero; LayerNorms start as the identity."""
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(2000, hidden=64, layers=2, heads=1, dropout=0.2, max_len=50))
    assert (model.item_embeddings.weight[0] == 0).all()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Embedding):
            weight = module.weight[1:] if module is model.item_embeddings else module.weight
            assert weight.std().item() == pytest.approx(0.02, rel=0.1), module
            assert abs(weight.mean().item()) < 0.005, module
        if isinstance(module, torch.nn.Linear):
            assert (module.bias == 0).all()
        if isinstance(module, torch.nn.LayerNorm):
            assert (module.weight == 1).all() and (module.bias == 0).all()


def test_input_embeddings_are_layer_normalised():
    """The item and position embeddings are summed then layer-normalised: scaling both changes nothing."""
    model = make_model()
    items = pad_left(HISTORIES, MAX_LEN)
    with torch.no_grad():
        before = model.encode(items)
        model.item_embeddings.weight.mul_(10)
        model.position_embeddings.weight.mul_(10)
        assert torch.allclose(model.encode(items), before, atol=1e-5)


def test_each_block_ends_with_a_layer_norm():
    """Post-LN: each block's output is layer-normalised at every real position (unit variance at init)."""
    model = make_model()
    items = pad_left(HISTORIES, MAX_LEN)
    outputs = []
    for block in model.blocks:
        block.register_forward_hook(lambda module, args, output: outputs.append(output))
    with torch.no_grad():
        model.encode(items)
    assert len(outputs) == len(model.blocks)
    for hidden in outputs:  # [real positions, d]: the blocks carry only the real positions
        assert len(hidden) == int((items > 0).sum())
        assert torch.allclose(hidden.mean(-1), torch.zeros(len(hidden)), atol=1e-5)
        assert torch.allclose(hidden.var(-1, unbiased=False), torch.ones(len(hidden)), atol=1e-3)


def test_a_batch_of_only_padding_encodes_to_zeros():
    model = make_model()
    with torch.no_grad():
        hidden = model.encode(torch.zeros(3, MAX_LEN, dtype=torch.long))
    assert hidden.shape == (3, MAX_LEN, 16) and (hidden == 0).all()


# --- the stage ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """About 145 users and 93 items; 3 training steps per epoch at batch size 64."""
    return make_dataset(
        tmp_path_factory.mktemp("tiny"), users=150, items=120, num_negatives=20, min_length=6, max_length=15
    )


def sasrec_call(data, out_dir: Path, cfg=None, full_ranking=False, stats=None, negatives=None, authors=False):
    """The call the `sasrec` rule makes (the `sasrec_authors` rule's, with `authors`)."""
    inputs = {"splits": data.splits, "negatives": negatives or data.negatives, "stats": stats or data.stats}
    params = sasrec_params(out_dir / "checkpoints", cfg, full_ranking, authors)
    return stage_call("sasrec", inputs, sasrec_outputs(out_dir), params)


def run_stage(data, out_dir: Path, cfg=None, full_ranking=False, stats=None, negatives=None):
    """Run the stage; return its metrics row (as written) and its outputs."""
    output = sasrec_outputs(out_dir)
    stage.run(sasrec_call(data, out_dir, cfg, full_ranking, stats, negatives))
    return json.loads(Path(output.metrics).read_text()), output


@pytest.fixture(scope="module")
def full_run(tiny, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("sasrec")
    metrics, output = run_stage(tiny, out_dir, full_ranking=True)
    return metrics, output, out_dir


def test_stage_outputs(tiny, full_run):
    returned, output, out_dir = full_run
    for name in SASREC_OUTPUTS:
        assert Path(getattr(output, name)).is_file(), name
    assert not (out_dir / "checkpoints").exists()
    assert not list(out_dir.glob(".*.tmp"))

    tables = load_file(output.item_embeddings)
    assert list(tables) == ["item_embeddings"]
    assert tables["item_embeddings"].shape == (tiny.num_items + 1, 32)
    assert torch.equal(load_item_embeddings(output.item_embeddings, tiny.num_items), tables["item_embeddings"])
    weights = load_file(output.model)
    assert torch.equal(weights["item_embeddings.weight"], tables["item_embeddings"])

    metrics = json.loads(Path(output.metrics).read_text())
    assert metrics == json.loads(json.dumps(returned))
    assert metrics["model"] == "SASRec" and metrics["target"] == "sasrec" and metrics["layers"] == 1
    for split in ("valid", "test"):
        for name in METRIC_NAMES:
            # The sampled negatives are a subset of the full ranking's competitors.
            assert metrics[split][f"full_{name}"] <= metrics[split][name] + 1e-9
        assert metrics[split]["seconds"] > 0
        assert metrics[split]["HR@1"] <= metrics[split]["HR@5"] <= metrics[split]["HR@10"]
    assert metrics["params"]["total"] == metrics["params"]["trainable"] > 0
    assert metrics["train_seconds"] > 0
    assert metrics["valid"]["MRR"] == pytest.approx(metrics["best_valid_mrr"], abs=1e-9)

    log = pl.read_csv(output.train_log)
    assert log.height == 2
    assert log["epoch"].to_list() == [1.0, 2.0]
    assert {"loss", "mrr", "seconds", "step"} <= set(log.columns)
    assert log["loss"].is_finite().all() and (log["seconds"] > 0).all()
    assert max(log["mrr"]) == pytest.approx(metrics["best_valid_mrr"], abs=1e-9)

    manifest = json.loads(Path(output.manifest).read_text())
    assert manifest["stage"] == "sasrec"
    assert manifest["config"]["sasrec"] == sasrec_config()
    assert manifest["config"]["evaluate"] == {"full_ranking": True}
    assert set(manifest["inputs"]) == {tiny.splits, tiny.negatives, tiny.stats}
    assert {output.item_embeddings, output.metrics} <= set(manifest["outputs"])


def test_full_ranking_off_has_no_full_metrics(tiny, tmp_path):
    metrics, _ = run_stage(tiny, tmp_path, cfg=sasrec_config(epochs=1))
    assert set(metrics["test"]) == {*METRIC_NAMES, "seconds"}


def _comparable(metrics: dict) -> dict:
    drop = {"seconds", "train_seconds", "inference_seconds"}
    return {
        k: _comparable(v) if isinstance(v, dict) else v
        for k, v in metrics.items()
        if k not in drop and not k.endswith("_seconds")
    }


@pytest.fixture(scope="module")
def second_run(tiny, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("sasrec_again")
    metrics, output = run_stage(tiny, out_dir, full_ranking=True)
    return metrics, output


def test_same_seed_gives_identical_outputs(tiny, full_run, second_run, tmp_path):
    first_metrics, first, _ = full_run
    second_metrics, second = second_run
    for name in ("item_embeddings", "model"):
        a, b = load_file(getattr(first, name)), load_file(getattr(second, name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
            assert a[key].numpy().tobytes() == b[key].numpy().tobytes(), (name, key)
    assert _comparable(first_metrics) == _comparable(second_metrics)
    logs = [pl.read_csv(out.train_log).drop("seconds") for out in (first, second)]
    assert logs[0].equals(logs[1])
    # A different seed gives a different model (the check above is not vacuous).
    _, third = run_stage(tiny, tmp_path / "other", cfg=sasrec_config(seed=43, epochs=1))
    other = load_file(third.item_embeddings)["item_embeddings"]
    assert not torch.equal(load_file(first.item_embeddings)["item_embeddings"], other)


def test_same_seed_gives_byte_identical_files(full_run, second_run):
    _, first, _ = full_run
    _, second = second_run
    assert Path(first.item_embeddings).read_bytes() == Path(second.item_embeddings).read_bytes()
    assert Path(first.model).read_bytes() == Path(second.model).read_bytes()


def test_early_stopping_keeps_the_best_epoch(tiny, tmp_path):
    epochs = 60
    cfg = sasrec_config(lr=0.05, dropout=0.0, epochs=epochs, patience=1)
    metrics, output = run_stage(tiny, tmp_path, cfg=cfg)
    log = pl.read_csv(output.train_log)
    assert 2 <= log.height < epochs
    mrr = log["mrr"].to_list()
    best = int(np.argmax(mrr))
    # Patience 1: it stops at the first epoch that does not improve on the best so far.
    assert best == log.height - 2 and mrr[-1] <= mrr[best]
    assert metrics["best_valid_mrr"] == pytest.approx(mrr[best], abs=1e-9)
    assert metrics["valid"]["MRR"] == pytest.approx(mrr[best], abs=1e-9)
    assert metrics["best_step"] == log["step"][best]
    # The written model is the best epoch's, not the last one's.
    weights = load_file(output.model)
    model = SASRec(SASRecConfig(tiny.num_items, 32, 1, 1, 0.0, 20))
    model.load_state_dict(weights)
    valid = load_eval_splits(tiny.splits, tiny.negatives, tiny.num_items)["valid"]
    again = evaluate(model.eval().user_vectors, model.item_table, valid, 20, full_ranking=False)
    assert again["MRR"] == pytest.approx(mrr[best], abs=1e-9)


def _assert_no_outputs(output):
    for name in SASREC_OUTPUTS:
        assert not Path(getattr(output, name)).exists(), name


def test_huge_learning_rate_raises_nonfinite_loss(tiny, tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"epoch \d+\.\d+, step \d+") as info:
        run_stage(tiny, tmp_path, cfg=sasrec_config(lr=1e30, epochs=3))
    assert "No model was written" in str(info.value)
    _assert_no_outputs(sasrec_outputs(tmp_path))


def test_nan_loss_names_epoch_and_step(tiny, tmp_path, monkeypatch):
    original = SASRec.forward
    calls = {"n": 0}

    def nan_from_step_five(self, input_ids, labels=None):
        out = original(self, input_ids, labels)
        calls["n"] += 1
        if calls["n"] >= 5 and labels is not None:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(SASRec, "forward", nan_from_step_five)
    with pytest.raises(NonFiniteLossError) as info:
        run_stage(tiny, tmp_path, cfg=sasrec_config(epochs=3))
    # Three steps per epoch: step 5 is the second step of the second epoch.
    assert re.search(r"epoch 1\.33, step 5\b", str(info.value)), str(info.value)
    _assert_no_outputs(sasrec_outputs(tmp_path))


# --- resume ----------------------------------------------------------------------------------


def test_killed_run_resumes_under_the_same_settings(tiny, full_run, tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="slmrec")
    kill_at(monkeypatch, 5)  # three steps an epoch: checkpoint-3 exists, the second epoch is half done
    with pytest.raises(Killed):
        run_stage(tiny, tmp_path, full_ranking=True)
    assert (tmp_path / "checkpoints" / "checkpoint-3").is_dir()
    monkeypatch.undo()
    caplog.clear()
    metrics, output = run_stage(tiny, tmp_path, full_ranking=True)
    assert f"resuming from {tmp_path / 'checkpoints' / 'checkpoint-3'}" in caplog.text
    # The resumed run is the uninterrupted one: same item table, same metrics.
    _, reference, _ = full_run
    assert Path(output.item_embeddings).read_bytes() == Path(reference.item_embeddings).read_bytes()
    assert pl.read_csv(output.train_log)["epoch"].to_list() == [1.0, 2.0]


@pytest.mark.parametrize(("change", "logged"), [({"lr": 0.001}, "sasrec.lr"), ({"hidden": 16}, "sasrec.hidden")])
def test_killed_run_starts_afresh_under_changed_settings(tiny, tmp_path, monkeypatch, caplog, change, logged):
    """A changed learning rate is not resumed with the old one; a changed size does not fail on the old weights."""
    caplog.set_level("INFO", logger="slmrec")
    kill_at(monkeypatch, 5)
    with pytest.raises(Killed):
        run_stage(tiny, tmp_path)
    monkeypatch.undo()
    caplog.clear()
    metrics, output = run_stage(tiny, tmp_path, cfg=sasrec_config(**change))
    assert "starting afresh" in caplog.text and logged in caplog.text
    assert "resuming from" not in caplog.text
    assert json.loads(Path(output.manifest).read_text())["config"]["sasrec"] == sasrec_config(**change)
    assert load_file(output.item_embeddings)["item_embeddings"].shape[1] == sasrec_config(**change)["hidden"]


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda c: (c / "trainer_state.json").unlink(), "trainer_state.json is missing"),
        (lambda c: _cut(c / "trainer_state.json"), "trainer_state.json is cut short or corrupt"),
        (lambda c: _cut(c / "optimizer.pt"), "optimizer.pt is cut short or corrupt"),
        (lambda c: _cut(c / "model.safetensors"), "model.safetensors is cut short or corrupt"),
    ],
    ids=["state-missing", "state-cut", "optimizer-cut", "weights-cut"],
)
def test_a_half_written_checkpoint_is_skipped_for_the_newest_complete_one(
    tiny, tmp_path, monkeypatch, caplog, damage, reason
):
    """A kill or a full disk while checkpoint-6 was written: the rerun resumes from checkpoint-3 and says why."""
    caplog.set_level("INFO", logger="slmrec")
    cfg = sasrec_config(epochs=3)
    kill_at(monkeypatch, 8)  # three steps an epoch: checkpoint-3 and checkpoint-6 written
    with pytest.raises(Killed):
        run_stage(tiny, tmp_path, cfg=cfg)
    checkpoints = tmp_path / "checkpoints"
    damage(checkpoints / "checkpoint-6")
    assert training.incomplete(checkpoints / "checkpoint-3") is None
    monkeypatch.undo()
    caplog.clear()
    _, output = run_stage(tiny, tmp_path, cfg=cfg)
    assert f"skipping {checkpoints / 'checkpoint-6'}: {reason}" in caplog.text
    assert f"resuming from {checkpoints / 'checkpoint-3'}" in caplog.text
    assert pl.read_csv(output.train_log)["epoch"].to_list() == [1.0, 2.0, 3.0]


@contextlib.contextmanager
def small_disk(path: Path, size: str = "8k"):
    """A real filesystem of `size` mounted at `path` (tmpfs), to fill as a full disk would be."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_full_disk_while_checkpointing_says_so_and_where(tiny, tmp_path):
    with small_disk(tmp_path / "checkpoints"), pytest.raises(training.DiskFullError) as info:
        run_stage(tiny, tmp_path)
    message = str(info.value)
    assert f"no space left on device while writing a checkpoint in {tmp_path / 'checkpoints'}" in message
    assert "inline_container" not in message
    _assert_no_outputs(sasrec_outputs(tmp_path))


def test_a_full_disk_while_writing_the_model_says_so_and_where_and_the_rerun_resumes(tiny, tmp_path, caplog):
    out = tmp_path / "out"
    call = sasrec_call(tiny, out)
    call.params["checkpoints"] = str(tmp_path / "checkpoints")
    with small_disk(out), pytest.raises(training.DiskFullError) as info:
        stage.run(call)
    assert f"no space left on device while writing the SASRec artifacts in {out}" in str(info.value)
    caplog.set_level("INFO", logger="slmrec")
    stage.run(call)  # space freed: as the message says, the training is not done again
    assert "resuming from" in caplog.text and "starting afresh" not in caplog.text


# --- bad input ---------------------------------------------------------------------------------


def test_negatives_of_another_dataset_are_refused(tiny, tmp_path):
    other = make_dataset(
        tmp_path / "other", users=120, items=120, num_negatives=20, seed=8, min_length=6, max_length=15
    )
    with pytest.raises(DataError, match="negatives"):
        run_stage(tiny, tmp_path / "out", negatives=other.negatives)
    _assert_no_outputs(sasrec_outputs(tmp_path / "out"))


def test_item_ids_beyond_the_item_table_are_refused(tiny, tmp_path):
    stats = json.loads(Path(tiny.stats).read_text())
    small = tmp_path / "stats.json"
    write_json(small, {**stats, "items": stats["items"] - 5})
    with pytest.raises(DataError, match="larger than the item table"):
        run_stage(tiny, tmp_path / "out", stats=str(small))
    _assert_no_outputs(sasrec_outputs(tmp_path / "out"))


def test_training_item_beyond_the_item_table_is_refused():
    sequences = [[1, 2, 3], [4, 9]]
    assert training_sequences(sequences, 9) == [[1, 2, 3], [4, 9]]
    with pytest.raises(DataError, match=r"training item id 9 is larger than the item table \(8 items\)"):
        training_sequences(sequences, 8)


def test_load_item_embeddings_checks_the_item_count(full_run, tiny):
    _, output, _ = full_run
    assert load_item_embeddings(output.item_embeddings, tiny.num_items).shape[0] == tiny.num_items + 1
    with pytest.raises(DataError, match="another dataset"):
        load_item_embeddings(output.item_embeddings, tiny.num_items + 1)
    with pytest.raises(DataError):
        load_item_embeddings(output.item_embeddings, tiny.num_items - 1)


# --- quality (acceptance) ----------------------------------------------------------------------


def test_sasrec_beats_popularity_twice_on_demo_like_data(tmp_path):
    """The demo generator's shape (default sequence options, 999 negatives), scaled down for CI.

    1200 users x 1300 items leaves about 1070 items after the 5-core filter, enough for 999 negatives
    (1100 items would leave fewer than 999 eligible items for the longest histories).
    """
    data = make_dataset(tmp_path / "data", users=1200, items=1300, num_negatives=999)
    assert data.num_items > 1000
    cfg = sasrec_config(hidden=64, layers=2, dropout=0.2, lr=0.005, batch_size=64, epochs=4, max_len=50)
    sasrec_metrics, _ = run_stage(data, tmp_path / "sasrec", cfg=cfg)
    pop_out = SimpleNamespace(
        metrics=str(tmp_path / "pop.json"),
        ranks=str(tmp_path / "pop_ranks.parquet"),
        manifest=str(tmp_path / "pop_manifest.json"),
    )
    params = {"target": "popularity", "evaluate": {"full_ranking": False}}
    pop_row = popularity.run(stage_call("popularity", data_inputs(data), pop_out, params))
    sas, pop = sasrec_metrics["test"]["NDCG@10"], pop_row.test["NDCG@10"]
    assert pop > 0
    assert sas >= 2 * pop, f"SASRec test NDCG@10 {sas:.2f} vs popularity {pop:.2f}"
