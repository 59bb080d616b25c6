"""The compute precision of the LLM stages: bf16 autocast where the device multiplies bf16 natively, float32
elsewhere.

A CPU with AVX512-BF16 or AMX multiplies bf16 matrices about twice as fast as float32, and a CUDA GPU with bf16
more than that; elsewhere bf16 is emulated and slower. `backbone.precision: auto` therefore asks the device.
Under bf16 autocast the matrix products of the backbone, LoRA and projections run in bf16, while the residual
stream, norms and losses stay float32 (torch's autocast lists); the scores over the item table are computed in
float32 in any case (`LLMRec.scores`), since bf16's 8 significant bits would tie near scores.
"""

from __future__ import annotations

import contextlib
import functools

import torch

PRECISIONS = ("auto", "float32", "bf16")


@functools.cache
def bf16_capable(device_type: str) -> bool:
    """Whether torch reports native bf16 arithmetic on this kind of device: a CUDA GPU that supports bf16, or a CPU
    with AVX512-BF16 or AMX instructions."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve(setting: str, device_type: str) -> str:
    """`float32` or `bf16`: the setting, with `auto` decided by the device's capability."""
    if setting not in PRECISIONS:
        raise ValueError(f"backbone.precision must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    if setting == "auto":
        return "bf16" if bf16_capable(device_type) else "float32"
    return setting


def autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on `device_type` for a resolved `bf16`; no change for `float32`."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")
