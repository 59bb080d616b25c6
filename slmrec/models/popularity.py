"""The popularity baseline as a recommender: every user gets the same ranking, by training-set count.

It meets the same `Recommender` interface as the trained models (a constant one-dimensional user vector
and an item "table" of counts), so it is scored by exactly the same protocol.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


class Popularity(nn.Module):
    counts: Tensor  # buffer [items + 1, 1]: each item's training interactions

    def __init__(self, train_sequences: list[list[int]], num_items: int) -> None:
        super().__init__()
        flat = np.fromiter((item for seq in train_sequences for item in seq), dtype=np.int64)
        counts = np.bincount(flat, minlength=num_items + 1)[: num_items + 1]
        self.register_buffer("counts", torch.as_tensor(counts, dtype=torch.float32).unsqueeze(1))  # [items + 1, 1]

    @property
    def item_table(self) -> Tensor:
        return self.counts

    @property
    def num_layers(self) -> None:
        return None

    def user_vectors(self, items: Tensor) -> Tensor:
        return torch.ones(len(items), 1, device=items.device)  # [B, 1]

    def parameter_counts(self) -> dict[str, int]:
        return {"total": 0, "trainable": 0, "inference": 0}

    def save_artifacts(self, output: dict[str, str]) -> None:
        """Nothing to save: the counts are recomputed from the splits in no time."""
