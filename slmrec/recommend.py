"""Top-k recommendations from a trained model: for every known user (the `recommend` rules), or for new histories
of raw item ids (`python -m slmrec recommend` on an export, `slmrec.export`).

An item's score is the dot product of the user vector with the item's row of the item table, as in evaluation
(`slmrec.evaluate`); here the k best items are kept, by default leaving out those already in the history. A known
user is scored on the whole known history, train, valid and test, so the list is what should come after the last
known item: a step no metric checks, as validation and test hold the last two items out.

Users are batched by history length, as in evaluation. The `recommend_shard` jobs split those batches, never a
batch, so a user is scored in the same batch whatever the number of shards, and the gathered output is the same.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl
import torch
from torch import Tensor
from tqdm import tqdm

from slmrec import layout
from slmrec.errors import ArtifactError, HistoryError
from slmrec.evaluate import Encoder, encoded_batches, seen_mask
from slmrec.io import read_artifact
from slmrec.models.popularity import Popularity
from slmrec.models.recommender import Recommender
from slmrec.models.sasrec import load_item_embeddings, load_sasrec

# A recommendations table: each user's items, best first (rank 1), with raw ids as the source data spells them.
RECOMMENDATION_SCHEMA = {"user": pl.String, "rank": pl.Int32, "item": pl.String, "score": pl.Float32}


@dataclass
class IdMap:
    """Raw ids by internal id (preprocess's `users.parquet` or `items.parquet`; index 0, the padding, is empty)."""

    raw: np.ndarray  # [N + 1] of str

    @classmethod
    def read(cls, path: str | Path, kind: str) -> IdMap:
        """The map of `kind` ("user" or "item") from its table, whose ids must run 1..N."""
        frame = read_artifact(path, pl.read_parquet).sort(kind)
        if not np.array_equal(frame[kind].to_numpy(), np.arange(1, frame.height + 1)):
            raise ArtifactError(f"{path}: the {kind} ids do not run 1..{frame.height}; rerun preprocess")
        return cls(np.array(["", *frame[f"{kind}_id"].cast(pl.String).to_list()], dtype=object))

    def __len__(self) -> int:
        return len(self.raw) - 1

    @functools.cached_property
    def internal(self) -> dict[str, int]:
        """Internal id by raw id."""
        return {raw: index for index, raw in enumerate(self.raw) if index}


@dataclass
class KnownUsers:
    """A dataset's users in internal id order: their ids, training sequences and whole known histories (train, then
    the valid and test items), oldest first."""

    ids: np.ndarray
    train: list[list[int]]
    histories: list[list[int]]

    @classmethod
    def read(cls, splits_path: str | Path) -> KnownUsers:
        splits = read_artifact(splits_path, pl.read_parquet).sort("user")
        known = splits.select(pl.concat_list("train", "valid", "test"))
        return cls(splits["user"].to_numpy(), splits["train"].to_list(), known.to_series().to_list())


@dataclass
class TopK:
    """The best items of some histories: which (`rows`, [N]), their internal item ids and scores ([N, k], best
    first). A history that leaves fewer than k items to recommend ends in scores of -inf."""

    rows: np.ndarray
    items: Tensor
    scores: Tensor


@torch.no_grad()
def top_k(
    encode: Encoder,
    item_table: Tensor,
    histories: list[list[int]],
    batches: list[np.ndarray],
    k: int,
    max_len: int,
    *,
    exclude_history: bool,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> TopK:
    """The `k` best items for the rows of `histories` that `batches` (`evaluate.history_batches`) hold, in their
    order: the model reads each history's newest `max_len` items; `exclude_history` leaves out every item of it.
    A progress bar counts the users where there are several batches."""
    table = item_table.to(device, torch.float32)
    k = min(k, table.shape[0] - 1)
    rows, items, scores = [], [], []
    bar = tqdm(total=sum(map(len, batches)), desc="recommend", unit="user", disable=not progress or len(batches) < 2)
    for batch, chosen, users in encoded_batches(encode, histories, batches, max_len, device):
        logits = users @ table.T  # [B, d] x [d, items + 1]
        logits[:, 0] = float("-inf")  # the padding id
        if exclude_history:
            logits.masked_fill_(seen_mask(chosen, logits.shape[1], logits.device), float("-inf"))
        best = logits.topk(k, dim=1)  # [B, k] each, best first
        rows.append(batch)
        items.append(best.indices.cpu())
        scores.append(best.values.cpu())
        bar.update(len(batch))
    bar.close()
    if not rows:  # a shard with no batch
        return TopK(np.zeros(0, dtype=np.int64), torch.zeros(0, k, dtype=torch.int64), torch.zeros(0, k))
    return TopK(np.concatenate(rows), torch.cat(items), torch.cat(scores))


def shard_batches(batches: list[np.ndarray], shard: str) -> list[np.ndarray]:
    """The batches of Snakemake's scatter item `shard` ("2-of-3"): a contiguous run of whole batches."""
    index, count = (int(n) for n in shard.split("-of-"))
    if not 1 <= index <= count:
        raise ValueError(f"shard {shard!r}: expected i-of-n with 1 <= i <= n")
    return batches[len(batches) * (index - 1) // count : len(batches) * index // count]


def recommendations_frame(users: Sequence[str], top: TopK, items: IdMap) -> pl.DataFrame:
    """Rows of `RECOMMENDATION_SCHEMA` for `top`, whose rows are the `users` (raw ids), with raw item ids; an item
    that could not be recommended (score -inf: the history left fewer than k) has no row."""
    n, k = top.items.shape
    frame = pl.DataFrame(
        {
            "user": np.repeat(np.asarray(users, dtype=object), k),
            "rank": np.tile(np.arange(1, k + 1), n),
            "item": items.raw[top.items.flatten().numpy()],
            "score": top.scores.flatten().numpy(),
        },
        schema=RECOMMENDATION_SCHEMA,
    )
    return frame.filter(pl.col("score").is_finite())


def load_model(
    target: str, files: dict[str, str], known: KnownUsers, num_items: int, precision: str | None, device: str
) -> tuple[Recommender, int]:
    """A trained model row, in eval mode on `device`, and the history length it reads: popularity (counted from
    the training sequences), SASRec (its `model` weights) or an LLM (its `model` weights and `config` on the
    `backbone` input, over the `item_embeddings`, computing in `precision`, else as it was trained)."""
    model: Recommender
    if target == layout.POPULARITY:
        model, max_len = Popularity(known.train, num_items), 1
    elif not layout.is_llm(target):
        sasrec = load_sasrec(files["model"])
        if sasrec.config.num_items != num_items:
            raise ArtifactError(
                f"{files['model']}: a model of {sasrec.config.num_items} items, the data has {num_items}"
            )
        model, max_len = sasrec, sasrec.config.max_len
    else:
        from slmrec.models.llmrec import load_llmrec  # transformers and peft: seconds to import, for LLM rows alone

        table = load_item_embeddings(files["item_embeddings"], num_items)
        overrides = {"precision": precision} if precision else {}
        llm = load_llmrec(Path(files["model"]).parent, table, backbone=files["backbone"], **overrides)
        model, max_len = llm, llm.config.max_len
    if model.item_table.device.type != device:  # a quantized backbone is placed where it loads
        cast(torch.nn.Module, model).to(device)
    return model.eval(), max_len


@dataclass
class History:
    """A history to recommend for, as given: raw item ids, oldest first; its number in the input (from 1), where a
    file gave it ("FILE, line N" or "FILE, row N") and, if given, whose it is."""

    number: int
    items: list[str]
    user: str | None = None
    where: str | None = None

    @property
    def label(self) -> str:
        """How notes and errors name it: where it was given, and whose (or which) history it is."""
        who = f"user {self.user}" if self.user is not None else f"history {self.number}"
        return f"{self.where} ({who})" if self.where else who


def read_histories(path: str | Path) -> list[History]:
    """The histories of a file: Parquet with a list column `history` (and optionally `user`), or JSON lines, each a
    list of item ids or an object with `history` (and optionally `user`). Ids are read as text."""
    path = Path(path)
    if path.suffix == ".parquet":
        frame = read_artifact(path, pl.read_parquet)
        if "history" not in frame.columns:
            raise HistoryError(f"{path}: no `history` column (a list of item ids per row); it has {frame.columns}")
        if not isinstance(frame.schema["history"], pl.List):
            raise HistoryError(
                f"{path}: column `history` is {frame.schema['history']}; expected a list of item ids per row"
            )
        users = frame["user"].cast(pl.String).to_list() if "user" in frame.columns else [None] * frame.height
        rows = enumerate(zip(users, frame["history"].to_list(), strict=True), 1)
        return [History(n, [str(i) for i in items or []], user, f"{path}, row {n}") for n, (user, items) in rows]
    histories: list[History] = []
    for line_number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise HistoryError(f"{path}, line {line_number}: not JSON ({err})") from err
        value = {"history": value} if isinstance(value, list) else value
        if not isinstance(value, dict) or not isinstance(value.get("history"), list):
            raise HistoryError(
                f"{path}, line {line_number}: expected a JSON list of item ids, or an object with a `history` list"
            )
        user = None if value.get("user") is None else str(value["user"])
        items = [str(i) for i in value["history"]]
        histories.append(History(len(histories) + 1, items, user, f"{path}, line {line_number}"))
    return histories


def internal_history(history: History, items: IdMap, skip_unknown: bool) -> tuple[list[int], list[str]]:
    """The internal ids of `history`'s items, and notes on what was dropped. An item id the model does not know is an
    error, unless `skip_unknown` drops it. An item given twice is kept once, at its first place: preprocess keeps a
    user's first interaction with an item, so no history the model learned from repeats one. A history left with no
    item is an error: the model reads a user's items, and never learned from an empty history."""
    unknown = list(dict.fromkeys(i for i in history.items if i not in items.internal))
    if unknown and not skip_unknown:
        raise HistoryError(
            f"{history.label}: unknown item id{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}, not among "
            f"the model's {len(items)} items; drop unknown ids with --skip-unknown"
        )
    known = [i for i in history.items if i in items.internal]
    kept = list(dict.fromkeys(known))  # first occurrences, in order
    notes = [f"dropped the unknown item ids {', '.join(map(repr, unknown))}"] if unknown else []
    repeated = [i for i, count in Counter(known).items() if count > 1]
    if repeated:
        notes.append(f"kept only the first of each repeated item ({', '.join(map(repr, repeated))})")
    if not kept:
        after = " once its unknown ids are dropped" if unknown else ""
        raise HistoryError(
            f"{history.label}: the history is empty{after}; give at least one item id the model knows (it recommends "
            "from a user's items and never learned from an empty history)"
        )
    return [items.internal[i] for i in kept], notes
