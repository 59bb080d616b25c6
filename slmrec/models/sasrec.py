"""SASRec (Kang & McAuley, 2018): causal self-attention over a user's item sequence.

Its item-embedding table is what the LLM recommenders later freeze and reuse, so the model is
trained with a full softmax over all items at every position of a sequence in one forward pass.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from slmrec.errors import ArtifactError, DataError
from slmrec.io import atomic_path, read_artifact


@dataclass
class SASRecConfig:
    num_items: int
    hidden: int
    layers: int
    heads: int
    dropout: float
    max_len: int

    @classmethod
    def from_settings(cls, sasrec: dict[str, Any], num_items: int) -> SASRecConfig:
        """From a `sasrec` section (with `authors_protocol`'s settings merged in, for that row)."""
        return cls(num_items, sasrec["hidden"], sasrec["layers"], sasrec["heads"], sasrec["dropout"], sasrec["max_len"])

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


class Dropout(nn.Dropout):
    """`nn.Dropout` with its mask drawn by `torch.rand`: on CPU that costs half of the Bernoulli draw
    `F.dropout` makes, and dropout is otherwise a quarter of a SASRec training step there."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or self.p == 1.0:
            return super().forward(x)
        return x * torch.rand_like(x).ge_(self.p).div_(1.0 - self.p)


class SASRecBlock(nn.Module):
    """Attention and point-wise feed-forward, each added to its input and then layer-normalised (post-LN).

    Post-LN, as in the SASRec paper and RecBole: at this depth it trains to better rankings than pre-LN.
    """

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        if config.hidden % config.heads:
            raise ValueError(f"sasrec.hidden ({config.hidden}) must be divisible by sasrec.heads ({config.heads})")
        self.heads = config.heads
        self.qkv = nn.Linear(config.hidden, 3 * config.hidden)
        self.out = nn.Linear(config.hidden, config.hidden)
        self.attn_norm = nn.LayerNorm(config.hidden, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(config.hidden, config.hidden),
            nn.ReLU(),
            Dropout(config.dropout),
            nn.Linear(config.hidden, config.hidden),
        )
        self.ffn_norm = nn.LayerNorm(config.hidden, eps=1e-8)
        self.dropout = Dropout(config.dropout)
        self.attn_dropout = config.dropout

    def forward(self, x: Tensor, real: Tensor, attn_mask: Tensor) -> Tensor:
        """Packed states [R, d] of the R real positions of a left-padded [B, L] grid (`real`).

        Only attention needs the grid; every other step is position-wise and skips the padding.
        """
        batch, length = real.shape
        qkv = x.new_zeros(batch, length, 3 * x.shape[-1])
        qkv[real] = self.qkv(x)  # [R, 3d] into [B, L, 3d]; padded positions stay zero
        # [B, L, 3d] -> [3, B, heads, L, d / heads]
        q, k, v = qkv.view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        attn = attn.transpose(1, 2).reshape(batch, length, -1)[real]  # [R, d]
        x = self.attn_norm(x + self.dropout(self.out(attn)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.item_embeddings = nn.Embedding(config.num_items + 1, config.hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_len, config.hidden)
        self.input_norm = nn.LayerNorm(config.hidden, eps=1e-8)
        self.dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.layers))
        self.apply(self._init_weights)
        with torch.no_grad():
            self.item_embeddings.weight[0].zero_()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """N(0, 0.02) weights and zero biases (BERT, RecBole): small logits at the start of training."""
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)

    def encode(self, items: Tensor) -> Tensor:
        """Hidden states [B, L, d] of left-padded item ids [B, L]; padded positions come out as zeros.

        Positions count from the oldest real item, so extra left padding changes nothing and a position's
        state never depends on later items (training on every position then equals training on every
        prefix). Real queries never see padding; a padded query attends only to itself (zero keys and
        values), and its output is dropped. Only the real positions pass the embeddings, projections and
        feed-forward, and columns that are padding in every row skip attention too: padding costs little.
        """
        if items.shape[1] > self.config.max_len:
            items = items[:, -self.config.max_len :]
        skip = items.shape[1] - max(1, int((items > 0).sum(1).max()))  # leading columns with no real item
        items = items[:, skip:]
        real = items > 0
        positions = (real.cumsum(1) - 1).clamp(min=0)
        x = self.item_embeddings(items[real]) + self.position_embeddings(positions[real])  # [R, d]
        x = self.dropout(self.input_norm(x))
        length = items.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=items.device)
        attn_mask = ((causal & real.unsqueeze(1)) | eye).unsqueeze(1)
        for block in self.blocks:
            x = block(x, real, attn_mask)
        grid = x.new_zeros(*items.shape, x.shape[-1])
        grid[real] = x
        return F.pad(grid, (0, 0, skip, 0))  # [B, skip + length, d]

    def user_vectors(self, items: Tensor) -> Tensor:
        """The representation of each user: the hidden state at the newest (last) position."""
        return self.encode(items)[:, -1]

    @property
    def item_table(self) -> Tensor:
        return self.item_embeddings.weight

    @property
    def num_layers(self) -> int:
        return self.config.layers

    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable, "inference": total}

    def save_artifacts(self, output: dict[str, str]) -> None:
        """`model` (every weight) and `item_embeddings` (the table the LLM stages freeze)."""
        # One key holding sorted JSON: safetensors does not keep metadata order, and byte-identical files
        # keep the checksums in later manifests stable across reruns.
        metadata = {"config": json.dumps(self.config.to_dict(), sort_keys=True)}
        with atomic_path(output["model"]) as tmp:
            save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp), metadata=metadata)
        with atomic_path(output["item_embeddings"]) as tmp:
            save_file({"item_embeddings": self.item_table.detach().contiguous()}, str(tmp), metadata=metadata)

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """Next-item cross-entropy over all items at every real position (labels 0 = ignored); `logits` are those
        positions' scores [real positions, items + 1], in row-major order of `labels > 0`."""
        hidden = self.encode(input_ids)
        if labels is None:
            return {"hidden": hidden}
        keep = labels > 0
        logits = hidden[keep] @ self.item_table.T  # [real positions, items + 1]
        logits[:, 0] = float("-inf")
        return {"loss": F.cross_entropy(logits, labels[keep]), "hidden": hidden, "logits": logits}


def load_sasrec(path: str | os.PathLike) -> SASRec:
    """A trained SASRec from its `model.safetensors`, rebuilt from the config saved in the file's metadata."""
    metadata = read_artifact(str(path), _metadata)
    if "config" not in metadata:
        raise ArtifactError(f"{path}: no SASRec config in its metadata; rerun the stage that wrote it")
    model = SASRec(SASRecConfig(**json.loads(metadata["config"])))
    model.load_state_dict(read_artifact(str(path), load_file))
    return model


def _metadata(path: str) -> dict[str, str]:
    with safe_open(path, "pt") as handle:
        return handle.metadata() or {}


def load_item_embeddings(path: str | os.PathLike, num_items: int) -> Tensor:
    """The frozen item table the LLM stages reuse, checked against the dataset it should describe."""
    table = read_artifact(str(path), load_file)["item_embeddings"]
    if table.shape[0] != num_items + 1:
        raise DataError(
            f"{path}: item table has {table.shape[0] - 1} items but the dataset has {num_items}; "
            "it was trained on another dataset or an older preprocess run"
        )
    return table
