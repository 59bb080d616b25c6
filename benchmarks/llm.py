"""Benchmark the LLM recommenders on this machine: Table 5's student-over-teacher speed-ups, and the gain of
each optimisation (shared-prompt KV cache, length-bucketed inference, cached teacher states).

    .venv/bin/python benchmarks/llm.py                     # SmolLM2-135M on ml-100k when installed
    .venv/bin/python benchmarks/llm.py --users 64 --steps 1   # quicker
    .venv/bin/python benchmarks/llm.py --sections precision compile   # float32 against bf16, torch.compile

The backbone is the `smollm2-135m` preset (converted by the pipeline's own `convert_backbone` rule)
when its wheel is installed (`make smollm2`), else the demo's `tiny` preset; the data are ml-100k
(`data/ml-100k.inter`, `python -m slmrec fetch-ml100k`) when present, else the demo's. Both are built
through Snakemake, as a run would build them. The models are the deep teacher (the deepest multiple of
`--blocks` layers), E4SRec_8 and the 4-layer student, with random LoRA and projections: speed does not
depend on training. Every figure comes from one process, so the ratios are fair on a noisy machine.

Sections (`--sections`, all by default): `table5`, the speed-ups and each optimisation, in the models' default
precision (`backbone.precision: auto`); `precision`, each model's training step and inference in float32 against
bf16 autocast (`backbone.precision`); `compile`, E4SRec_8's training step with its backbone under `torch.compile`
against without, and how long compiling took.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from llm_timing import Measured, best, inference_rate, print_table, sample_split, step_seconds

from slmrec import layout
from slmrec.config import schema_defaults
from slmrec.data.fetch import ML100K_DEST
from slmrec.data.samples import EvalSplit, NextItemDataset, load_training_data
from slmrec.errors import BackboneError
from slmrec.models.distill import Distiller, DistillWeights, TeacherStates
from slmrec.models.llmrec import LLMRec, LLMRecConfig, build_llmrec
from slmrec.models.presets import preset_gguf
from slmrec.precision import bf16_capable, resolve
from slmrec.targets import (
    PAPER_VARIANTS,
    ablation_target,
    needs_offline_teacher,
    student_distill,
    teacher_name,
)

ROOT = Path(__file__).resolve().parent.parent
PAPER = {"train": 6.6, "inference": 8.0}  # Table 5: SLMRec 4 against E4SRec 32 on an A100
TARGET_FRACTION = 0.8  # the speed-up must reach this fraction of the layer ratio
PROMPT_CACHE_TARGET = 1.5
BF16_TRAIN_TARGET = 1.3  # the deep teacher's training step, float32 time over bf16 autocast time
COMPILE_GAIN, COMPILE_SECONDS = 1.2, 60.0  # what torch.compile must reach to be offered as a setting
SECTIONS = ("table5", "precision", "compile")
VARIANTS = {  # inference settings: (prompt cache, length buckets)
    "neither": (False, False),
    "buckets": (False, True),
    "prompt cache": (True, False),
    "both": (True, True),
}


def snakemake(*targets: str) -> None:
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--quiet=all", *targets]
    subprocess.run(command, cwd=ROOT, check=True)


def prepare(args: argparse.Namespace) -> tuple[str, str, str]:
    """(backbone name, backbone checkpoint, dataset), built by the pipeline's rules."""
    try:
        preset_gguf("smollm2-135m")
        backbone, name = layout.converted_backbone("smollm2-135m"), "SmolLM2-135M (pretrained, 30 layers)"
    except BackboneError:
        backbone, name = layout.backbone("demo"), "tiny preset (random, 8 layers)"
    dataset = args.dataset or ("ml100k" if (ROOT / ML100K_DEST).is_file() else "demo")
    snakemake(backbone, layout.data_file("negatives", dataset))
    return name, str(ROOT / backbone), dataset


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


@dataclass
class Bench:
    """What every section measures: the models (deep teacher, E4SRec_8, student) and their inputs."""

    args: argparse.Namespace
    name: str
    dataset: str
    models: dict[int, LLMRec]
    counts: dict[int, dict[str, int]]
    deep: int
    layers: list[int]
    split: EvalSplit
    max_len: int
    samples: NextItemDataset
    order: torch.Tensor
    batches: list[dict[str, torch.Tensor]]

    @functools.cached_property
    def cached_student(self) -> tuple[Distiller, list[dict[str, torch.Tensor]], float]:
        """The student as it trains offline (a Distiller over cached teacher states), its batches, and the
        teacher-state pass's seconds for every training sample (timed on `--users` of them, scaled)."""
        teacher, student = self.models[self.deep], self.models[self.args.student_layers]
        teacher.prompt_cache = student.prompt_cache = True
        start = time.perf_counter()
        subset = self.order[: self.args.users]
        states = TeacherStates.compute(
            teacher,
            self.samples.input_ids[subset],
            self.samples.labels[subset],
            self.args.blocks,
            "float32",
            self.args.eval_batch_size,
        )
        pass_seconds = (time.perf_counter() - start) * len(self.samples) / len(subset)
        cached_batches = [
            {**batch, "teacher_states": states.states[: len(batch["labels"])]} for batch in self.batches
        ]  # states of other samples: the same shapes and work, and only speed is measured
        weights = DistillWeights.from_settings(schema_defaults("distill"))
        cached = Distiller(student, None, self.args.blocks, weights, teacher_layers=self.deep)
        return cached, cached_batches, pass_seconds


def table5(b: Bench) -> list[str]:
    """Table 5's student-over-teacher speed-ups, and the gain of each optimisation, in the default precision."""
    args, models, deep, layers, split, max_len = b.args, b.models, b.deep, b.layers, b.split, b.max_len
    batches = b.batches
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
    cached, cached_batches, pass_seconds = b.cached_student
    live = Distiller(student, teacher, args.blocks, DistillWeights.from_settings(schema_defaults("distill")))
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
        rows.append([label, n, f"{b.counts[n]['trainable']:,}", fmt(step.value), fmt(rates[n]["both"].value)])
    print_table(
        f"Table 5, measured here ({b.name}, {b.dataset}, optimised paths)",
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
        for v in PAPER_VARIANTS
        if needs_offline_teacher(student_distill(ablation_target(v), schema_defaults("distill")))
    ]
    saved = train["student, live teacher"].value - train["student, cached teacher states"].value
    print(
        f"\nTeacher-state pass: {pass_seconds:.1f} s once for all {len(b.samples)} training samples (timed on "
        f"{min(args.users, len(b.samples))}, scaled), shared by {len(jobs)} jobs ({', '.join(jobs)}); "
        "without it each of them "
        f"runs the teacher at every step: {saved:.2f} s/step more, "
        f"{train['student, live teacher'].value / train['student, cached teacher states'].value:.1f}x a cached step."
    )
    return results


def precision(b: Bench) -> list[str]:
    """Each model's training step and inference in float32 against bf16 autocast, interleaved and repeated."""
    args, rows = b.args, []
    cached, cached_batches, _ = b.cached_student
    ratios: dict[int, tuple[float, float]] = {}
    for n, model in b.models.items():
        model.prompt_cache = True
        trained, batches = (cached, cached_batches) if n == args.student_layers else (model, b.batches)
        default = model.config.precision
        train: dict[str, Measured] = {}
        infer: dict[str, Measured] = {}
        for _ in range(args.repeats):
            for chosen in ("float32", "bf16"):
                model.config.precision = chosen
                train[chosen] = best(train.get(chosen), step_seconds(trained, batches, args.steps), False)
                rate = inference_rate(model, b.split, b.max_len, args.eval_batch_size, prompt_cache=True, bucket=True)
                infer[chosen] = best(infer.get(chosen), rate, True)
                print(f"  {chosen} {teacher_name(n)}: {train[chosen].value:.2f} s/step", file=sys.stderr)
        model.config.precision = default
        ratios[n] = (train["float32"].value / train["bf16"].value, infer["bf16"].value / infer["float32"].value)
        label = f"SLMRec {n}←{b.deep} (cached states)" if n == args.student_layers else teacher_name(n)
        rows.append(
            [
                label,
                fmt(train["float32"].value),
                fmt(train["bf16"].value),
                fmt(ratios[n][0]),
                fmt(infer["float32"].value),
                fmt(infer["bf16"].value),
                fmt(ratios[n][1]),
            ]
        )
    print_table(
        f"float32 against bf16 autocast ({b.name}; bf16 native on this CPU: {bf16_capable('cpu')})",
        ["model", "train s/step fp32", "bf16", "x", "inference users/s fp32", "bf16", "x"],
        rows,
    )
    return [check(f"  bf16 training step, {teacher_name(b.deep)}", ratios[b.deep][0], BF16_TRAIN_TARGET)]


def compile_gain(b: Bench) -> list[str]:
    """E4SRec_8's training step with its backbone under `torch.compile` (inductor) against eager, in the default
    precision; offered as a setting only at COMPILE_GAIN or more, compiled in under COMPILE_SECONDS."""
    args = b.args
    model = b.models[8 if 8 in b.models else b.deep]
    model.prompt_cache = True
    eager = step_seconds(model, b.batches, args.steps)
    model.backbone.compile()
    start = time.perf_counter()
    first = step_seconds(model, b.batches, 1)  # the untimed warm-up step compiles (forward and backward)
    compile_seconds = time.perf_counter() - start - first.value
    compiled = min((step_seconds(model, b.batches, args.steps) for _ in range(args.repeats)), key=lambda m: m.value)
    gain = eager.value / compiled.value
    print_table(
        f"torch.compile, {teacher_name(model.num_layers)} training step ({b.name})",
        ["eager s/step", "compiled s/step", "x", "compile s"],
        [[fmt(eager.value), fmt(compiled.value), fmt(gain), fmt(compile_seconds, 1)]],
    )
    worth = gain >= COMPILE_GAIN and compile_seconds < COMPILE_SECONDS
    verdict = "offer it as a setting" if worth else "not offered (report only)"
    return [
        f"  torch.compile: {gain:.2f}x after {compile_seconds:.0f} s of compiling (offered at >= {COMPILE_GAIN}x "
        f"within {COMPILE_SECONDS:.0f} s): {verdict}"
    ]


SECTION_RUNNERS = {"table5": table5, "precision": precision, "compile": compile_gain}


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
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to measure")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    name, backbone, dataset = prepare(args)
    data = load_training_data(*layout.data_inputs(dataset, ROOT / layout.RESULTS).values())
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
    print(f"torch threads: {torch.get_num_threads()}; backbone: {name}; data: {dataset}")
    print(
        f"{len(split)} users scored per model and setting, batch {args.eval_batch_size}; training batch "
        f"{args.batch_size}, {args.steps} timed steps; prompt: the default alpaca template"
    )

    models = {n: llmrec(backbone, n, table) for n in layers}
    precisions = {n: resolve(model.config.precision, "cpu") for n, model in models.items()}
    counts = {n: model.parameter_counts() for n, model in models.items()}  # before a Distiller freezes a teacher
    prompt_tokens = len(models[deep].prompt_ids)
    history = sum(min(len(h), max_len) for h in split.histories) / len(split)
    print(
        f"tokens per user: prompt {prompt_tokens}, items {history:.1f} on average, suffix "
        f"{len(models[deep].suffix_ids)}; default precision {precisions[deep]} (backbone.precision: auto)"
    )
    bench = Bench(args, name, dataset, models, counts, deep, layers, split, max_len, samples, order, batches)
    results = [line for section in args.sections for line in SECTION_RUNNERS[section](bench)]

    print("\n" + "\n".join(results))
    return 1 if any("FAIL" in r for r in results) else 0  # the compile line reports, it does not fail


if __name__ == "__main__":
    sys.exit(main())
