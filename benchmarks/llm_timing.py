"""Timing shared by `llm.py` (CPU, a real backbone) and `gpu_efficiency.py` (a 7B shape on a GPU).

Both measure the project's own code paths (`LLMRec`, `Distiller`, `slmrec.evaluate.evaluate`) with
each optimisation switched on and off in the same process, so their ratios are fair on a noisy machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from slmrec.batching import pad_left
from slmrec.data.samples import EvalSplit
from slmrec.evaluate import evaluate
from slmrec.models.llmrec import LLMRec


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Measured:
    """One measurement: a rate or a duration, and the peak accelerator memory it took (GiB; 0 on CPU)."""

    value: float
    peak_gib: float = 0.0


def measured(device: torch.device, run: Callable[[], float]) -> Measured:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    value = run()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return Measured(value, peak)


def inference_rate(
    model: LLMRec, split: EvalSplit, max_len: int, batch_size: int, *, prompt_cache: bool, bucket: bool
) -> Measured:
    """Users scored per second through the evaluation protocol (user vectors, then candidate scores)."""
    device = model.item_table.device
    model.prompt_cache = prompt_cache
    model.eval()
    with torch.no_grad():  # warm-up at the timed batch size: kernels, allocator, lazy initialisation
        model.user_vectors(pad_left(split.histories[:batch_size], max_len).to(device))
    model.eval()  # the warm-up's prompt is not reused: the timed run computes its own, once

    def run() -> float:
        scores = evaluate(
            model.user_vectors,
            model.item_table,
            split,
            max_len,
            batch_size,
            full_ranking=False,
            device=device,
            bucket=bucket,
        )
        return len(split) / scores["seconds"]

    return measured(device, run)


def step_seconds(module: nn.Module, batches: list[dict[str, Tensor]], steps: int, accumulation: int = 1) -> Measured:
    """Mean seconds of one optimizer step (forward, backward and AdamW over `accumulation` micro-batches),
    after one untimed warm-up step."""
    device = next(p for p in module.parameters() if p.requires_grad).device
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)
    module.train()

    def step(index: int) -> None:
        for micro in range(accumulation):
            batch = batches[(index * accumulation + micro) % len(batches)]
            (module(**batch)["loss"] / accumulation).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def run() -> float:
        step(0)
        synchronize(device)
        start = time.perf_counter()
        for index in range(1, steps + 1):
            step(index)
        synchronize(device)
        return (time.perf_counter() - start) / steps

    return measured(device, run)


def best(a: Measured | None, b: Measured, higher_is_better: bool) -> Measured:
    """The better of two repeats: on a shared machine, the least disturbed run is the truest."""
    if a is None:
        return b
    return max(a, b, key=lambda m: m.value) if higher_is_better else min(a, b, key=lambda m: m.value)


def sample_split(split: EvalSplit, users: int, seed: int = 0) -> EvalSplit:
    """A random subset of a split's users, so a slow model is timed on a few hundred instead of all."""
    rows = np.sort(np.random.default_rng(seed).choice(len(split), size=min(users, len(split)), replace=False))
    return EvalSplit(
        split.name,
        split.users[rows],
        [split.histories[row] for row in rows],
        split.targets[rows],
        split.negatives[rows],
    )


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    for line in [header, ["-" * w for w in widths], *rows]:
        print(
            "  "
            + "  ".join(
                str(cell).rjust(w) if i else str(cell).ljust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
