"""Training samples built from the leave-one-out splits, for SASRec and for the LLM recommenders."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import torch

from slmrec.data.preprocess import DataError
from slmrec.evaluate import EvalSplit, load_eval_splits, pad_left
from slmrec.io import read_artifact, read_json


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

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[index], "labels": self.labels[index]}


class NextItemDataset(torch.utils.data.Dataset):
    """The LLM recommenders' samples: prefixes of each user's training sequence with the item that follows,
    at most `targets_per_user` per user (the paper trains on one, the last training item; E4SRec up to 50).
    """

    def __init__(self, sequences: list[list[int]], max_len: int, targets_per_user: int) -> None:
        histories, labels = [], []
        for seq in sequences:
            for end in range(max(1, len(seq) - targets_per_user), len(seq)):
                histories.append(seq[:end])
                labels.append(seq[end])
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
