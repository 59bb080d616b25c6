"""The one interface every model meets: what training, evaluation and the metrics row ask of a model."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Recommender(Protocol):
    """What every model offers the training path and the evaluation protocol.

    A user vector ([B, d], from left-padded item ids [B, L]) scores an item by its dot product with
    that item's row of `item_table` ([items + 1, d], row 0 padding).
    """

    @property
    def item_table(self) -> Tensor: ...

    @property
    def num_layers(self) -> int | None: ...

    def user_vectors(self, items: Tensor) -> Tensor: ...

    def parameter_counts(self) -> dict[str, int]:
        """`total`, `trainable` and `inference` (what scoring needs) parameters."""
        ...

    def eval(self) -> Any:
        """Scoring mode (every model is a torch module)."""
        ...

    def save_artifacts(self, output: dict[str, str]) -> None:
        """Write the model's own files among the stage's outputs."""
        ...
