"""Training samples built from the leave-one-out splits, for SASRec and for the LLM recommenders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from slmrec.batching import pad_left
from slmrec.errors import DataError
from slmrec.io import read_artifact, read_json


@dataclass
class EvalSplit:
    """Histories, targets and stored negatives of one split, aligned by row."""

    name: str
    users: np.ndarray
    histories: list[list[int]]
    targets: np.ndarray
    negatives: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


def load_eval_splits(splits_path: str | Path, negatives_path: str | Path, num_items: int) -> dict[str, EvalSplit]:
    """Read and cross-check the splits and their negatives; a mismatch means they come from different runs."""
    splits = read_artifact(splits_path, pl.read_parquet)
    negatives = read_artifact(negatives_path, pl.read_parquet)
    if splits["user"].to_list() != negatives["user"].to_list():
        raise DataError(
            f"{negatives_path} does not hold the users of {splits_path} in the same order: "
            "the negatives come from another dataset or an older preprocess run; rerun the negatives rule"
        )
    train = splits["train"].to_list()
    valid = splits["valid"].to_numpy()
    result = {
        "valid": EvalSplit("valid", splits["user"].to_numpy(), train, valid, _negative_matrix(negatives, "valid")),
        "test": EvalSplit(
            "test",
            splits["user"].to_numpy(),
            [h + [v] for h, v in zip(train, valid.tolist(), strict=True)],
            splits["test"].to_numpy(),
            _negative_matrix(negatives, "test"),
        ),
    }
    for split in result.values():
        largest = max(int(split.negatives.max()), int(split.targets.max()))
        if largest > num_items:
            raise DataError(
                f"{negatives_path}: item id {largest} in the {split.name} candidates is larger than the item "
                f"table ({num_items} items); the files come from different preprocess runs"
            )
        clash = (split.negatives == split.targets[:, None]).any(axis=1)
        if clash.any():
            user = int(split.users[np.argmax(clash)])
            raise DataError(
                f"{negatives_path}: user {user}'s {split.name} negatives contain its own {split.name} item; "
                "the negatives were drawn for other splits"
            )
    return result


def _negative_matrix(negatives: pl.DataFrame, split: str) -> np.ndarray:
    lengths = negatives[split].list.len().unique()
    if lengths.len() != 1:
        raise DataError(f"negatives for {split} have uneven lengths {sorted(lengths.to_list())}")
    return np.asarray(negatives[split].to_list(), dtype=np.int64)


def training_sequences(sequences: list[list[int]], num_items: int) -> list[list[int]]:
    """The users' training sequences, checked against the size of the item table."""
    largest = max((max(seq) for seq in sequences if seq), default=0)
    if largest > num_items:
        raise DataError(f"training item id {largest} is larger than the item table ({num_items} items)")
    return sequences


class SequenceDataset(torch.utils.data.Dataset):
    """SASRec's samples: one row per user, the sequence shifted by one, so every position predicts the next item
    (or, with `last_only`, only the last position: the SLMRec authors' SASRec, one target per user)."""

    def __init__(self, sequences: list[list[int]], max_len: int, last_only: bool = False) -> None:
        self.input_ids = pad_left([seq[:-1] for seq in sequences], max_len)  # [U, max_len]
        self.labels = pad_left([seq[1:] for seq in sequences], max_len)  # [U, max_len], 0 = no target
        if last_only:
            self.labels[:, :-1] = 0
        # [U, max_len]: at each position, the teacher's sample with the same target after the same history (-1: none)
        self.teacher_index: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = {"input_ids": self.input_ids[index], "labels": self.labels[index]}
        if self.teacher_index is not None:
            sample["teacher_index"] = self.teacher_index[index]
        return sample


@dataclass(frozen=True)
class Window:
    """`sequences[user][start:end]`: one training row of SASRec."""

    user: int
    start: int
    end: int


def windows(sequences: list[list[int]], max_len: int) -> list[Window]:
    """Each sequence cut, from its newest item back, into windows of at most `max_len` targets.

    A row of `SequenceDataset` reads only the newest `max_len` inputs, so without this the older part of a
    long history (two fifths of MovieLens-100K's training targets) would never be a target. Windows
    overlap by one item, the older window's last target being the newer one's first input, so every
    target is trained on exactly once.
    """
    return [
        Window(user, max(0, end - max_len - 1), end)
        for user, seq in enumerate(sequences)
        for end in range(len(seq), 1, -max_len)
    ]


def window_rows(sequences: list[list[int]], max_len: int) -> tuple[list[Window], SequenceDataset]:
    """Every position of every window of the training sequences (`windows`), as rows of a `SequenceDataset`."""
    rows = windows(sequences, max_len)
    return rows, SequenceDataset([sequences[w.user][w.start : w.end] for w in rows], max_len)


def window_teacher_index(rows: list[Window], origins: list[tuple[int, int]], max_len: int) -> torch.Tensor:
    """For each row and position of a `SequenceDataset` of `rows`, the index of the teacher's training sample
    (`NextItemDataset.origins`: user and history length) with the same target after the same history, or -1.
    Each reads that history's newest items, as many as its own `max_len` (and SASRec's window) holds."""
    sample_of = {origin: i for i, origin in enumerate(origins)}
    index = torch.full((len(rows), max_len), -1, dtype=torch.long)  # [rows, max_len]
    for r, row in enumerate(rows):
        targets = row.end - row.start - 1  # right-aligned: position max_len - targets + k predicts start + 1 + k
        for k in range(targets):
            index[r, max_len - targets + k] = sample_of.get((row.user, row.start + 1 + k), -1)
    return index


class NextItemDataset(torch.utils.data.Dataset):
    """The LLM recommenders' samples: prefixes of each user's training sequence with the item that follows,
    at most `targets_per_user` per user (the paper trains on one, the last training item; E4SRec up to 50).
    """

    def __init__(self, sequences: list[list[int]], max_len: int, targets_per_user: int) -> None:
        histories, labels = [], []
        self.origins: list[tuple[int, int]] = []  # (user, history length) of each sample
        for user, seq in enumerate(sequences):
            for end in range(max(1, len(seq) - targets_per_user), len(seq)):
                histories.append(seq[:end])
                labels.append(seq[end])
                self.origins.append((user, end))
        if not labels:
            raise ValueError("no training samples: every user has fewer than two training items")
        self.input_ids = pad_left(histories, max_len)  # [N, max_len]
        self.labels = torch.tensor(labels, dtype=torch.long)  # [N]
        self.teacher_states: torch.Tensor | None = None  # [N, n, H]: cached teacher states travel with samples

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = {"input_ids": self.input_ids[index], "labels": self.labels[index]}
        if self.teacher_states is not None:
            sample["teacher_states"] = self.teacher_states[index]
        return sample


@dataclass
class TrainingData:
    """What every model trains and is scored on: the item count, the training sequences, valid and test."""

    num_items: int
    sequences: list[list[int]]
    splits: dict[str, EvalSplit]


def load_training_data(splits_path: str, negatives_path: str, stats_path: str) -> TrainingData:
    """Read the preprocess and negatives artifacts, cross-checked against each other."""
    num_items = read_artifact(stats_path, read_json)["items"]
    splits = load_eval_splits(splits_path, negatives_path, num_items)
    sequences = training_sequences(read_artifact(splits_path, pl.read_parquet)["train"].to_list(), num_items)
    return TrainingData(num_items, sequences, splits)
