"""Batching of item histories, shared by training, the teacher-state pass and evaluation."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def pad_left(histories: list[list[int]], max_len: int) -> Tensor:
    """The last `max_len` items of each history, left-padded with 0, so the newest item is always last."""
    batch = torch.zeros(len(histories), max_len, dtype=torch.long)
    for row, history in enumerate(histories):
        tail = history[-max_len:]
        if tail:
            batch[row, max_len - len(tail) :] = torch.as_tensor(tail, dtype=torch.long)
    return batch


def length_batches(lengths: np.ndarray, batch_size: int, bucket: bool = True) -> list[np.ndarray]:
    """Row indices in batches; with `bucket`, sorted by length so short histories share batches.

    The LLM recommenders drop the columns that are padding in every row, so a batch of short histories
    costs only its own length instead of the longest in the split.
    """
    order = np.argsort(lengths, kind="stable") if bucket else np.arange(len(lengths))
    return [order[begin : begin + batch_size] for begin in range(0, len(order), batch_size)]
