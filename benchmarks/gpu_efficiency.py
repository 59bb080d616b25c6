"""Table 5 on a GPU: the teacher (32 and 8 layers) and the 4-layer student on a LLaMA-2-7B-shaped backbone.

    python benchmarks/gpu_efficiency.py             # a CUDA GPU: the 7B shape in bf16, about 5 minutes
    python benchmarks/gpu_efficiency.py --tiny      # anywhere: a tiny shape in float32, seconds (CPU smoke test)

No weights are downloaded: the backbone (32 layers, hidden 4096, intermediate 11008, 32 heads) is built
with random weights directly on the GPU, which is all that speed depends on. The models are the project's
own `LLMRec` (LoRA from the schema's defaults) and `Distiller` (the student reads cached teacher states,
as every offline student does). For each model it measures, with and without the shared-prompt KV cache:

* a training step at the paper's batch 256 (micro-batches with gradient accumulation), and its peak memory;
* inference users/s through the evaluation protocol (length-bucketed, 99 negatives), and its peak memory;

then prints the Table 5 comparison beside the paper's 6.6x (training) and 8.0x (inference), and the
fraction of the GPU's bf16 peak FLOP/s reached. FLOPs count the matrix products actually run: 2 per
weight per token in the linear layers plus the attention products; a training step counts 2x its
forward (LoRA leaves the base weights frozen, so their backward is the input gradient only).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from llm_timing import Measured, inference_rate, print_table, step_seconds
from transformers import LlamaConfig, LlamaModel

from slmrec.config import schema_defaults
from slmrec.data.samples import EvalSplit
from slmrec.models.distill import Distiller, DistillWeights
from slmrec.models.llmrec import DTYPES, LLMRec, LLMRecConfig, add_lora
from slmrec.targets import STUDENT, student_distill

SHAPES: dict[str, dict[str, Any]] = {
    "llama2-7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
    },
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 192,
        "num_hidden_layers": 8,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": 320,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
    },
}
PAPER = {"train": 6.6, "inference": 8.0, "teacher_layers": 32, "student_layers": 4}


@dataclass
class Setup:
    device: torch.device
    dtype: str
    shape: dict[str, Any]
    prompt_tokens: int
    suffix_tokens: int
    num_items: int
    max_len: int


def build(setup: Setup, layers: int, table: torch.Tensor, seed: int = 0) -> LLMRec:
    """An LLM recommender on a randomly initialised backbone made on the device in its dtype."""
    torch.manual_seed(seed)
    teacher = schema_defaults("teacher")
    config = LLMRecConfig.from_settings(
        f"random {setup.shape['hidden_size']}-hidden LLaMA",
        {**schema_defaults("backbone"), "dtype": setup.dtype},
        schema_defaults("prompt"),
        teacher,
        layers,
        table,
    )
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES[setup.dtype])
    try:
        with setup.device:
            backbone = LlamaModel(LlamaConfig(**{**setup.shape, "num_hidden_layers": layers}))
    finally:
        torch.set_default_dtype(default_dtype)
    backbone = add_lora(backbone, config.lora, config.gradient_checkpointing)
    vocab = setup.shape["vocab_size"]
    prompt = torch.randint(3, vocab, (setup.prompt_tokens,), generator=torch.Generator().manual_seed(seed))
    suffix = torch.randint(3, vocab, (setup.suffix_tokens,), generator=torch.Generator().manual_seed(seed + 1))
    return LLMRec(config, backbone, table, prompt, suffix).to(setup.device)


def synthetic_split(setup: Setup, users: int, seed: int = 0) -> EvalSplit:
    """Histories of 5 to `max_len` items (uniform), a target and 99 negatives each: only their shapes matter."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, setup.max_len + 1, size=users)
    histories = [rng.integers(1, setup.num_items + 1, size=n).tolist() for n in lengths]
    targets = rng.integers(1, setup.num_items + 1, size=users)
    negatives = rng.integers(1, setup.num_items + 1, size=(users, 99))
    return EvalSplit("test", np.arange(users), histories, targets, negatives)


def forward_flops(model: LLMRec, users: int, items: float, prompt_cache: bool) -> float:
    """Matrix-product FLOPs of one forward over `users` with `items` items on average."""
    frozen = [p for n, p in model.backbone.named_parameters() if ".layers." in n and "lora_" not in n]
    per_layer = sum(p.numel() for p in frozen if p.dim() == 2) / model.num_layers  # the projections' weights
    prompt, suffix = len(model.prompt_ids), len(model.suffix_ids)
    own = items + suffix  # tokens each user runs itself
    tokens = users * own + (prompt if prompt_cache else users * prompt)
    context = prompt + own / 2 if prompt_cache else (prompt + own) / 2  # mean keys a query attends to
    hidden = model.backbone.config.hidden_size
    per_token = 2 * per_layer + 4 * hidden * context
    return tokens * per_token * model.num_layers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny shape in float32 on any device (smoke test)")
    parser.add_argument("--users", type=int, default=2048, help="users scored per model and setting")
    parser.add_argument("--eval-batch-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=256, help="the effective training batch (paper: 256)")
    parser.add_argument("--micro-batch", type=int, default=32, help="per forward; accumulation makes up the batch")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up step)")
    parser.add_argument("--prompt-tokens", type=int, default=50, help="the alpaca prefix in LLaMA-2 tokens")
    parser.add_argument("--suffix-tokens", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100/H200)")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("no CUDA device: run with --tiny for the CPU smoke test", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    setup = Setup(
        device=device,
        dtype="float32" if args.tiny else "bfloat16",
        shape=SHAPES["tiny" if args.tiny else "llama2-7b"],
        prompt_tokens=args.prompt_tokens,
        suffix_tokens=args.suffix_tokens,
        num_items=10_000,
        max_len=schema_defaults("teacher")["max_len"],
    )
    deep = setup.shape["num_hidden_layers"]
    student_layers = PAPER["student_layers"] if not args.tiny else 2
    layers = [deep, deep // 2 if args.tiny else 8, student_layers]
    blocks = student_layers
    accumulation = max(1, args.batch_size // args.micro_batch)
    table = torch.randn(setup.num_items + 1, schema_defaults("sasrec")["hidden"]) * 0.1
    split = synthetic_split(setup, args.users)
    items = float(np.mean([len(h) for h in split.histories]))
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(
        f"{name}; shape {'tiny' if args.tiny else 'LLaMA-2-7B'} in {setup.dtype}; prompt {args.prompt_tokens} + "
        f"{items:.1f} items + suffix {args.suffix_tokens} tokens per user; batch {args.batch_size} = "
        f"{args.micro_batch} x {accumulation} accumulation"
    )
    start = time.perf_counter()
    rng = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(accumulation * (args.steps + 1)):
        lengths = torch.randint(5, setup.max_len + 1, (args.micro_batch,), generator=rng)
        ids = torch.randint(1, setup.num_items + 1, (args.micro_batch, setup.max_len), generator=rng)
        ids[torch.arange(setup.max_len) < setup.max_len - lengths[:, None]] = 0  # left padding
        labels = torch.randint(1, setup.num_items + 1, (args.micro_batch,), generator=rng)
        batches.append({"input_ids": ids.to(device), "labels": labels.to(device)})

    results: dict[tuple[int, bool], dict[str, Measured]] = {}
    params: dict[int, dict[str, int]] = {}
    weights = DistillWeights.from_settings(student_distill(STUDENT, schema_defaults("distill")))
    for n in layers:
        model = build(setup, n, table.to(device))
        params[n] = model.parameter_counts()
        hidden = model.backbone.config.hidden_size
        for cache in (True, False):
            model.prompt_cache = cache
            inference = inference_rate(
                model, split, setup.max_len, args.eval_batch_size, prompt_cache=cache, bucket=True
            )
            if n == student_layers:  # the student trains from cached teacher states: [B, blocks, H] per micro-batch
                trained = Distiller(model, None, blocks, weights, teacher_layers=deep)
                states = torch.randn(args.micro_batch, blocks, hidden, dtype=DTYPES[setup.dtype], device=device)
                step = step_seconds(
                    trained, [{**b, "teacher_states": states} for b in batches], args.steps, accumulation
                )
            else:
                step = step_seconds(model, batches, args.steps, accumulation)
            results[(n, cache)] = {"train": step, "inference": inference}
            print(
                f"  {n} layers, prompt cache {cache}: {step.value:.3f} s/step, {inference.value:.1f} users/s",
                file=sys.stderr,
            )
        results[(n, True)]["flops"] = Measured(
            2 * forward_flops(model, args.batch_size, items, True) / results[(n, True)]["train"].value
        )
        results[(n, True)]["inference_flops"] = Measured(
            forward_flops(model, 1, items, True) * results[(n, True)]["inference"].value
        )
        del model
        if cuda:
            torch.cuda.empty_cache()

    rows = []
    for n in layers:
        label = f"SLMRec {n}" if n == student_layers else f"E4SRec_{n}"
        for cache in (True, False):
            r = results[(n, cache)]
            rows.append(
                [
                    label if cache else "",
                    "on" if cache else "off",
                    f"{params[n]['trainable']:,}",
                    f"{r['train'].value:.3f}",
                    f"{r['train'].peak_gib:.1f}",
                    f"{r['inference'].value:.1f}",
                    f"{r['inference'].peak_gib:.1f}",
                ]
            )
    print_table(
        f"Table 5 on {name} (training batch {args.batch_size}; inference batch {args.eval_batch_size})",
        ["model", "prompt cache", "trainable", "train s/step", "train GiB", "users/s", "infer GiB"],
        rows,
    )
    teacher, student = results[(deep, True)], results[(student_layers, True)]
    train_speedup = teacher["train"].value / student["train"].value
    infer_speedup = student["inference"].value / teacher["inference"].value
    print(
        f"\nStudent ({student_layers} layers) over teacher ({deep}): {train_speedup:.1f}x training, "
        f"{infer_speedup:.1f}x inference (paper, Table 5: {PAPER['train']}x and {PAPER['inference']}x on an A100)"
    )
    for n in layers:
        gain = results[(n, True)]["inference"].value / results[(n, False)]["inference"].value
        train_gain = results[(n, False)]["train"].value / results[(n, True)]["train"].value
        print(f"  prompt cache on {n} layers: {gain:.2f}x inference, {train_gain:.2f}x training")
    peak = args.peak_tflops * 1e12
    print(f"\nFraction of bf16 peak ({args.peak_tflops:.0f} TFLOP/s), with the prompt cache:")
    for n in layers:
        r = results[(n, True)]
        print(
            f"  {n} layers: training {r['flops'].value / peak:.1%}, inference {r['inference_flops'].value / peak:.1%}"
        )
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
