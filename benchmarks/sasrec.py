"""Benchmark SASRec training: every position in one pass (slmrec) vs one sample per prefix (reference).

    .venv/bin/python benchmarks/sasrec.py                   # the demo dataset and a ~50k-user one
    .venv/bin/python benchmarks/sasrec.py --users 2000      # the demo size only
    .venv/bin/python benchmarks/sasrec.py --ml100k          # quality and time on MovieLens-100K
    .venv/bin/python benchmarks/sasrec.py --student         # the SASRec student against plain SASRec

For each dataset (synthetic, the demo generator's shape) it builds the real artifacts (preprocess,
negatives), then:

* trains SASRec with the stage's own code (`slmrec.stages.sasrec.run`, the Snakemake rule) for a few
  epochs and reports seconds per epoch, training sequences/s and test metrics;
* times the same model trained the obvious way, one (prefix, next item) sample per row, on the same
  data for one epoch, with the same batch size, and reports its sequences/s;
* prints the speed ratio (prefix-loop time per epoch / slmrec time per epoch).

Both run in this process with the same torch thread count, so the ratio is fair on a noisy machine.

`--ml100k` instead trains the stage on the ml-100k artifacts (`results/ml100k/data`, or built from
`data/ml-100k.inter`, fetched if absent, with the dataset's preprocess and negatives settings) with the
default settings as the workflow merges them for dataset ml100k, in a fresh process as a Snakemake job
would, and prints the test metrics, the training and wall seconds and PASS/FAIL against the targets.

`--student` times the SASRec student (`slmrec.stages.sasrec_student`, both score terms) against plain SASRec
(`slmrec.stages.sasrec`), both by their stages on the same demo-size data and epochs, alternating, the best of
`--repeats` each. Its teacher is a stand-in with SmolLM2's width (576): cached final states for as many targets
per user as the score-distillation experiment (its overlay's `targets_per_user`) and an output projection,
random, since only the student's cost is measured. PASS when the student's training seconds per epoch (without
the validation pass both share) are within `STUDENT_TARGET` of plain SASRec's: it reads the teacher's scores
through one small product per taught position, and never runs the teacher.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch
import yaml
from safetensors.torch import save_file
from snakemake.utils import validate

from slmrec import layout
from slmrec.batching import pad_left
from slmrec.call import StageCall
from slmrec.config import SCHEMA_PATH, load_schema, schema_defaults, stage_config
from slmrec.data.fetch import fetch_ml100k
from slmrec.data.negatives import draw_negatives
from slmrec.data.preprocess import Preprocessed, preprocess, read_amazon2018, read_reviews
from slmrec.data.samples import NextItemDataset
from slmrec.data.synthetic import write_synthetic_reviews
from slmrec.io import write_json, write_parquet
from slmrec.models.distill import OUTPUT_BIAS, OUTPUT_WEIGHT, TeacherStates, samples_digest
from slmrec.models.sasrec import SASRec, SASRecConfig
from slmrec.stages.sasrec import run as run_sasrec
from slmrec.stages.sasrec_student import run as run_sasrec_student
from slmrec.targets import SASREC_STUDENT, student_distill

# The schema's SASRec settings with the demo's learning rate, and no early stopping within the timed epochs.
CONFIG = {**schema_defaults("sasrec"), "lr": 0.005, "patience": 100}
MAX_LEN = CONFIG["max_len"]

ROOT = Path(__file__).resolve().parent.parent
BUILT = "built"  # the dataset name of artifacts built here rather than by the workflow
ML100K_INPUTS = {name: Path(path) for name, path in layout.data_inputs("ml100k", ROOT / layout.RESULTS).items()}
TARGET_NDCG = 36.0  # test NDCG@10 on ml-100k, as a reference SASRec reaches on the same protocol
TARGET_SECONDS = 90.0  # wall seconds of the stage on 2 CPU cores
STUDENT_TARGET = 1.5  # the SASRec student's seconds per epoch, at most this times plain SASRec's
TEACHER_HIDDEN = 576  # the stand-in teacher's width: SmolLM2-135M's
KD_OVERLAY = ROOT / "experiments" / "ml100k_kd.yaml"  # the score-distillation experiment, whose regime is timed
RESOURCES = {"eval_batch_size": 512, "report_to": "none"}  # the rule's resources; no tracker adds to the time


def write_artifacts(workdir: Path, result: Preprocessed, num_negatives: int, seed: int) -> dict[str, Path]:
    """The preprocess and negatives stages' outputs that SASRec reads, laid out as the pipeline lays them out
    under `workdir` (as its results/) for a dataset `BUILT`."""
    paths = {name: Path(path) for name, path in layout.data_inputs(BUILT, workdir).items()}
    paths["splits"].parent.mkdir(parents=True, exist_ok=True)
    write_parquet(paths["splits"], result.splits)
    write_json(paths["stats"], result.stats)
    negatives = draw_negatives(result.splits, result.stats["items"], num_negatives, seed, users=result.users)
    write_parquet(paths["negatives"], negatives)
    return paths


def build_dataset(workdir: Path, users: int, items: int) -> dict[str, Path]:
    raw = workdir / "reviews.json.gz"
    source = {**schema_defaults("source"), "users": users, "items": items}
    write_synthetic_reviews(raw, **{k: v for k, v in source.items() if k != "kind"})
    return write_artifacts(workdir, preprocess(read_amazon2018(raw, "error"), 3, 5), 999, 2025)


def ml100k_settings() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The ml100k dataset's source and stage settings, merged as the workflow merges them."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate(config, str(SCHEMA_PATH), set_default=True)
    schema = load_schema(SCHEMA_PATH)
    stages = ("preprocess", "negatives", "sasrec", "evaluate")
    return config["datasets"]["ml100k"]["source"], {s: stage_config(config, schema, "ml100k", s) for s in stages}


def ml100k_artifacts(workdir: Path) -> dict[str, Path]:
    """The workflow's ml-100k artifacts if they exist, else the same built into `workdir`."""
    if all(path.is_file() for path in ML100K_INPUTS.values()):
        return ML100K_INPUTS
    source, stages = ml100k_settings()
    raw = ROOT / source["path"]
    if not raw.is_file():
        print(f"fetching {fetch_ml100k(raw)}", file=sys.stderr)
    cfg = stages["preprocess"]
    result = preprocess(read_reviews(raw, source, cfg["on_bad_line"]), cfg["min_rating"], cfg["kcore"])
    negatives = stages["negatives"]
    return write_artifacts(workdir, result, negatives["num_negatives"], negatives["seed"])


def run_stage(paths: dict[str, Path], out: Path, sasrec: dict[str, Any], full_ranking: bool) -> Any:
    """The `sasrec` rule's call on these artifacts, writing into `out`; returns its metrics row."""
    files = {**layout.model_files("sasrec"), "manifest": layout.MANIFEST}
    output = {name: str(out / file) for name, file in files.items()}
    inputs = {name: str(paths[name]) for name in ("splits", "negatives", "stats")}
    params = {
        "target": "sasrec",
        "sasrec": sasrec,
        "authors_protocol": False,
        "evaluate": {"full_ranking": full_ranking},
        "checkpoints": str(out / "checkpoints"),
    }
    with contextlib.redirect_stdout(sys.stderr):  # Trainer's per-epoch dicts are progress, not results
        return run_sasrec(StageCall("sasrec", inputs, output, params, RESOURCES))


def time_slmrec(paths: dict[str, Path], workdir: Path, epochs: int) -> dict[str, float]:
    out = workdir / "sasrec"
    row = run_stage(paths, out, {**CONFIG, "epochs": epochs}, full_ranking=False)
    log = pl.read_csv(out / layout.SASREC_FILES["train_log"])
    # Includes the per-epoch validation and checkpoint the stage does: a conservative figure for slmrec.
    per_epoch = row.train_seconds / log.height
    return {"epoch_seconds": per_epoch, "test": row.test, "valid_seconds": row.valid["seconds"]}


def teacher_targets() -> int:
    """The teacher's training samples per user in the score-distillation experiment (its overlay's)."""
    overlay = yaml.safe_load(KD_OVERLAY.read_text())
    return int(overlay["datasets"]["ml100k_kd"]["teacher"]["targets_per_user"])


def stand_in_teacher(paths: dict[str, Path], workdir: Path) -> dict[str, str]:
    """A teacher's artifacts as the SASRec student reads them: cached final states of its training samples, its
    output projection and the item table, with random values (only the student's cost is measured)."""
    splits = pl.read_parquet(paths["splits"])
    num_items = json.loads(paths["stats"].read_text())["items"]
    samples = NextItemDataset(splits["train"].to_list(), schema_defaults("teacher")["max_len"], teacher_targets())
    generator = torch.Generator().manual_seed(0)
    (workdir / "teacher").mkdir(parents=True, exist_ok=True)
    files = {name: workdir / "teacher" / name for name in ("states.safetensors", "trainable.safetensors", "items")}
    states = torch.randn(len(samples), 1, TEACHER_HIDDEN, generator=generator)
    TeacherStates(states, 2, [2], samples_digest(samples.input_ids, samples.labels), {}).save(
        files["states.safetensors"]
    )
    dim = CONFIG["hidden"]
    head = {OUTPUT_WEIGHT: torch.randn(dim, TEACHER_HIDDEN, generator=generator) * 0.05, OUTPUT_BIAS: torch.zeros(dim)}
    save_file(head, str(files["trainable.safetensors"]))
    save_file({"item_embeddings": torch.randn(num_items + 1, dim, generator=generator)}, str(files["items"]))
    return {
        "teacher_states": str(files["states.safetensors"]),
        "teacher_weights": str(files["trainable.safetensors"]),
        "item_embeddings": str(files["items"]),
    }


def time_student(
    paths: dict[str, Path], workdir: Path, epochs: int, repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per epoch of plain SASRec and of the SASRec student (both score terms), each by its stage, best of
    `repeats`, alternating so that both see the same machine: with the epoch's validation pass, and without."""
    teacher = stand_in_teacher(paths, workdir)
    sasrec = {**CONFIG, "epochs": epochs}
    inputs = {name: str(paths[name]) for name in ("splits", "negatives", "stats")}
    distill = student_distill(SASREC_STUDENT, schema_defaults("distill"))
    samples = {"max_len": schema_defaults("teacher")["max_len"], "targets_per_user": teacher_targets()}
    best = {"SASRec": float("inf"), "SASRec student": float("inf")}
    training = dict(best)  # the same without the per-epoch validation pass, which both share
    for repeat in range(repeats):
        for name in best:
            out = workdir / f"{name.replace(' ', '_')}{repeat}"
            output = {k: str(out / file) for k, file in {**layout.SASREC_FILES, "manifest": layout.MANIFEST}.items()}
            common = {"evaluate": {"full_ranking": False}, "checkpoints": str(out / "checkpoints")}
            with contextlib.redirect_stdout(sys.stderr):
                if name == "SASRec":
                    params = {"target": "sasrec", "sasrec": sasrec, "authors_protocol": False, **common}
                    row = run_sasrec(StageCall("sasrec", inputs, output, params, RESOURCES))
                else:
                    params = {"target": SASREC_STUDENT, "sasrec": sasrec, "samples": samples, "distill": distill}
                    call = StageCall("sasrec_student", {**inputs, **teacher}, output, {**params, **common}, RESOURCES)
                    row = run_sasrec_student(call)
            epochs_run = pl.read_csv(out / layout.SASREC_FILES["train_log"]).height
            best[name] = min(best[name], row.train_seconds / epochs_run)
            training[name] = min(training[name], row.train_seconds / epochs_run - row.valid["seconds"])
    return best, training


def student(users: int, epochs: int, repeats: int) -> int:
    """The SASRec student's training time against plain SASRec's; 0 if within `STUDENT_TARGET`."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        paths = build_dataset(workdir, users, max(2000, users // 4))
        best, training = time_student(paths, workdir, epochs, repeats)
    print(f"torch threads {torch.get_num_threads()}; {users} users, {epochs} epochs, best of {repeats}")
    print(
        f"  the student: logits + rank KD from a teacher of width {TEACHER_HIDDEN}, up to {teacher_targets()} taught "
        "positions per user"
    )
    for what, times in (("with each epoch's validation", best), ("training alone", training)):
        print(
            f"  {what}: plain SASRec {times['SASRec']:.2f} s/epoch, the student {times['SASRec student']:.2f} s/epoch, "
            f"{times['SASRec student'] / times['SASRec']:.2f}x"
        )
    ratio = training["SASRec student"] / training["SASRec"]
    verdict = "PASS" if ratio <= STUDENT_TARGET else "FAIL"
    print(f"  training alone within {STUDENT_TARGET}x of plain SASRec: {verdict}")
    return 0 if ratio <= STUDENT_TARGET else 1


def time_prefix_loop(paths: dict[str, Path], max_batches: int) -> float:
    """Seconds per epoch of one (prefix -> next item) sample per row, every prefix of every sequence.

    An epoch of this loop on a large dataset takes many minutes, so it runs `max_batches` batches and
    scales the time to the epoch's batch count (batches are all the same size, so this is linear).
    """
    splits = pl.read_parquet(paths["splits"])
    num_items = json.loads(paths["stats"].read_text())["items"]
    histories, labels = [], []
    for seq in splits["train"].to_list():
        for end in range(1, len(seq)):
            histories.append(seq[max(0, end - MAX_LEN) : end])
            labels.append(seq[end])
    inputs, targets = pad_left(histories, MAX_LEN), torch.tensor(labels)
    torch.manual_seed(CONFIG["seed"])
    model = SASRec(
        SASRecConfig(num_items, CONFIG["hidden"], CONFIG["layers"], CONFIG["heads"], CONFIG["dropout"], MAX_LEN)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=CONFIG["lr"], betas=(0.9, 0.98))
    model.train()
    order = torch.randperm(len(targets))
    starts = range(0, len(order), CONFIG["batch_size"])
    start = time.perf_counter()
    for begin in starts[:max_batches]:
        batch = order[begin : begin + CONFIG["batch_size"]]
        user = model.user_vectors(inputs[batch])
        logits = user @ model.item_table.T
        logits[:, 0] = float("-inf")
        loss = torch.nn.functional.cross_entropy(logits, targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    measured = min(max_batches, len(starts))
    return (time.perf_counter() - start) / measured * len(starts)


def ml100k_child(splits: Path, out: Path) -> None:
    """The stage with ml100k's settings, as the child process a Snakemake job would be; prints its row. Its data
    are the splits' neighbours."""
    _, stages = ml100k_settings()
    names = {name: Path(path).name for name, path in layout.data_inputs().items()}
    paths = {name: splits.with_name(file) for name, file in names.items()}
    row = run_stage(paths, out, stages["sasrec"], stages["evaluate"]["full_ranking"])
    print(json.dumps({"test": row.test, "train_seconds": row.train_seconds}))


def ml100k() -> int:
    """Train the default SASRec on ml-100k in a fresh process; 0 if it meets both targets."""
    _, stages = ml100k_settings()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        paths = ml100k_artifacts(workdir)
        origin = (
            paths["splits"].parent.relative_to(ROOT) if paths == ML100K_INPUTS else "built afresh from the raw file"
        )
        start = time.perf_counter()
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--ml100k-child",
            str(paths["splits"]),
            str(workdir / "sasrec"),
        ]
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        wall = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"the sasrec stage failed with exit code {proc.returncode}")
    row = json.loads(proc.stdout.splitlines()[-1])
    test, cfg = row["test"], stages["sasrec"]
    quality, speed = test["NDCG@10"] >= TARGET_NDCG, wall <= TARGET_SECONDS
    print(f"ml-100k artifacts: {origin}; torch threads {torch.get_num_threads()}")
    print(f"  SASRec defaults for ml100k: {json.dumps(cfg, sort_keys=True)}")
    print(f"  test NDCG@10 {test['NDCG@10']:.2f}  HR@10 {test['HR@10']:.2f}  MRR {test['MRR']:.2f}")
    print(f"  training {row['train_seconds']:.1f} s, stage wall {wall:.1f} s (a fresh process, imports included)")
    print(f"  target NDCG@10 >= {TARGET_NDCG:g}: {'PASS' if quality else 'FAIL'}")
    print(f"  target stage wall <= {TARGET_SECONDS:g} s: {'PASS' if speed else 'FAIL'}")
    return 0 if quality and speed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[2000, 50000], help="dataset sizes (users)")
    parser.add_argument("--epochs", type=int, default=3, help="slmrec training epochs per dataset")
    parser.add_argument("--prefix-batches", type=int, default=300, help="batches timed in the prefix loop")
    parser.add_argument("--ml100k", action="store_true", help="quality and time of the defaults on ml-100k")
    parser.add_argument("--ml100k-child", nargs=2, type=Path, metavar=("SPLITS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--student", action="store_true", help="the SASRec student's time against plain SASRec's")
    parser.add_argument("--repeats", type=int, default=2, help="with --student: runs of each, the best kept")
    args = parser.parse_args()
    if args.student:
        return student(args.users[0], args.epochs, args.repeats)
    if args.ml100k_child:
        ml100k_child(*args.ml100k_child)
        return 0
    if args.ml100k:
        return ml100k()
    print(f"torch threads: {torch.get_num_threads()}")
    for users in args.users:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            paths = build_dataset(workdir, users, max(2000, users // 4))
            sequences = pl.read_parquet(paths["splits"]).height
            fast = time_slmrec(paths, workdir, args.epochs)
            slow = time_prefix_loop(paths, args.prefix_batches)
            print(
                f"\n{users} users ({sequences} training sequences), SASRec d={CONFIG['hidden']}, "
                f"batch {CONFIG['batch_size']}, max_len {MAX_LEN}"
            )
            print(
                f"  slmrec (all positions, one pass): {fast['epoch_seconds']:.2f} s/epoch, "
                f"{sequences / fast['epoch_seconds']:.0f} sequences/s"
            )
            print(
                f"  one sample per prefix:            {slow:.2f} s/epoch, {sequences / slow:.0f} sequences/s "
                f"(timed over up to {args.prefix_batches} batches, scaled to the epoch)"
            )
            print(f"  speed ratio (prefix loop / slmrec): {slow / fast['epoch_seconds']:.1f}x")
            test = fast["test"]
            print(
                f"  test after {args.epochs} epochs: HR@10 {test['HR@10']:.2f}  NDCG@10 {test['NDCG@10']:.2f}  "
                f"MRR {test['MRR']:.2f}  (scored in {test['seconds']:.2f} s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
