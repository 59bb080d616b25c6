"""SASRec as a student of an LLM teacher: its own CE at every position, plus the score terms from the teacher.

The teacher's scores come from its cached final states (`TeacherStates.final`) through its output projection
(`TeacherHead`): the LLM is never loaded, so the student trains at close to SASRec's own cost. SASRec is trained
on every position of every window, the teacher on the last `targets_per_user` prefixes of each user; a position
whose target, after the same history, is one of the teacher's samples gets the score terms (`window_teacher_index`;
SASRec reads that history from its window, the teacher its newest `max_len` items), the rest CE alone. The
hidden-state terms do not apply: SASRec's width is not the LLM's.

    L = mean over positions of CE + λ · (mean over the taught positions of the score term)

Each mean is a batch's, as the LLM student's terms are means over its samples: λ weighs the teacher's term
against CE whatever share of SASRec's positions the teacher covers (a tenth, on ml-100k with ten targets per
user). A batch without a taught position trains on CE alone.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from slmrec.models.distill import DistillWeights, TeacherHead, rank_gammas, score_terms, weighted_loss
from slmrec.models.sasrec import SASRec
from slmrec.targets import CE_LOG_KEY, SCORE_TERM_NAMES


class SASRecDistiller(nn.Module):
    """Wraps SASRec for `Trainer`: its loss is CE plus the weighted score terms, its scores SASRec's."""

    final_states: Tensor  # [N, H]: the teacher's final state of each of its training samples

    def __init__(
        self,
        student: SASRec,
        weights: DistillWeights,
        settings: dict[str, Any],
        head: TeacherHead | None = None,
        final_states: Tensor | None = None,
    ) -> None:
        super().__init__()
        if weights.needs_scores and (head is None or final_states is None):
            raise ValueError("the score terms need the teacher's head and its cached final states")
        if weights.kd_rank > 0:
            rank_gammas(settings)  # a bad setting fails before training, not at its first step
        self.student = student
        self.weights = weights
        self.settings = settings
        self.head = head
        self.register_buffer("final_states", final_states, persistent=False)

    def forward(
        self, input_ids: Tensor, labels: Tensor | None = None, teacher_index: Tensor | None = None
    ) -> dict[str, Any]:
        """`teacher_index` [B, L]: the teacher's sample at each position (-1: none), `SequenceDataset`'s."""
        out = self.student(input_ids, labels)
        if labels is None:
            return out
        weighted: dict[str, Tensor] = {}
        if self.weights.needs_scores:
            assert self.head is not None and teacher_index is not None  # checked in __init__; the dataset's
            taught = teacher_index >= 0  # [B, L]; every taught position has a target
            if taught.any():
                student_logits = out["logits"][taught[labels > 0]]  # [P, items + 1]: CE's own, not computed again
                teacher_logits = self.head(self.final_states[teacher_index[taught]])  # [P, items + 1]
                weighted = score_terms(student_logits, teacher_logits, self.weights, self.settings)
            else:  # a batch of old positions only: CE alone
                zero = out["loss"].new_zeros(())
                weighted = {name: zero for name in SCORE_TERM_NAMES if getattr(self.weights, name) > 0}
        return {**weighted_loss({CE_LOG_KEY: out["loss"]}, weighted, self.weights), "hidden": out["hidden"]}
