"""SLMRec knowledge distillation: a small LLM recommender (m layers) learns from a deep one (l layers).

Both models are cut into n blocks; at each block boundary the student's last-position hidden state is
pulled towards the teacher's (cosine and L2 terms), and the student's first n - 1 boundaries also get
their own recommendation head ("multiple supervision"):

    L = CE(student) + λ1 Σ_i (1 - cos(h_s_i, h_t_i)) + λ2 Σ_i ||h_s_i - h_t_i||_2 + λ3 Σ_{i<n} CE(adapter_i(h_s_i))

A weight of 0 removes its term entirely (it is not even computed), which is how ablations are run.
Offline, the teacher is frozen and runs without gradients; online, it trains alongside on its own CE,
and its states enter the alignment terms as fixed targets (detached), so it is not pulled towards
the student.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slmrec.models.blocks import DistillConfigError, block_boundaries
from slmrec.models.llmrec import LLMRec
from slmrec.targets import ALIGNMENT_TERMS, CE_LOG_KEY, LOSS_TERMS, TEACHER_CE_LOG_KEY


@dataclass
class DistillWeights:
    """λ1 (cos), λ2 (l2) and λ3 (multi_supervision), named as `slmrec.targets.LOSS_TERMS`."""

    cos: float
    l2: float
    multi_supervision: float

    @classmethod
    def from_settings(cls, distill: dict[str, float]) -> DistillWeights:
        """From a distill section's `<term>_weight` keys."""
        return cls(**{term.name: distill[term.weight_key] for term in LOSS_TERMS})

    @property
    def needs_teacher(self) -> bool:
        return any(getattr(self, name) > 0 for name in ALIGNMENT_TERMS)


class Distiller(nn.Module):
    """Wraps student and teacher for `Trainer`: its loss is the SLMRec objective, its scores the student's."""

    def __init__(
        self,
        student: LLMRec,
        teacher: LLMRec | None,
        blocks: int,
        weights: DistillWeights,
        online: bool = False,
    ) -> None:
        super().__init__()
        if teacher is None and (weights.needs_teacher or online):
            raise DistillConfigError("the cosine and L2 terms and online mode need a teacher")
        self.student = student
        self.teacher = teacher
        self.weights = weights
        self.online = online
        hidden = student.backbone.config.hidden_size
        teacher_layers = teacher.num_layers if teacher is not None else student.num_layers
        if teacher is not None and teacher.backbone.config.hidden_size != hidden:
            raise DistillConfigError(
                f"teacher hidden size {teacher.backbone.config.hidden_size} differs from the student's {hidden}; "
                "distil between models of the same backbone"
            )
        self.boundaries = block_boundaries(teacher_layers, student.num_layers, blocks)
        n_heads = len(self.boundaries) - 1 if weights.multi_supervision > 0 else 0
        self.adapters = nn.ModuleList(nn.Linear(hidden, student.config.item_dim) for _ in range(n_heads))
        if teacher is not None and not online:
            teacher.requires_grad_(False)
            teacher.eval()

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None and not self.online:
            self.teacher.eval()  # offline: dropout stays off in the frozen teacher
        return self

    def trainable_state_dict(self) -> dict[str, Tensor]:
        names = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if k in names}

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> dict[str, Tensor | dict[str, Tensor]]:
        student = self.student(input_ids, labels, output_layer_states=True)
        if labels is None:
            return student
        unweighted: dict[str, Tensor] = {CE_LOG_KEY: student["loss"]}
        weighted: dict[str, Tensor] = {}  # by LossTerm.name
        s_states = [student["layer_states"][:, s - 1] for _, s in self.boundaries]  # n x [B, H]
        if self.weights.needs_teacher or self.online:
            if self.online:
                teacher = self.teacher(input_ids, labels, output_layer_states=True)
                unweighted[TEACHER_CE_LOG_KEY] = teacher["loss"]
            else:
                with torch.no_grad():
                    teacher = self.teacher(input_ids, output_layer_states=True)
            t_states = [teacher["layer_states"][:, t - 1].detach() for t, _ in self.boundaries]  # n x [B, H]
            pairs = list(zip(s_states, t_states, strict=True))
            if self.weights.cos > 0:
                weighted["cos"] = sum((1 - F.cosine_similarity(s, t, dim=-1)).mean() for s, t in pairs)
            if self.weights.l2 > 0:
                weighted["l2"] = sum((s - t).norm(dim=-1).mean() for s, t in pairs)
        if self.weights.multi_supervision > 0:
            heads = zip(self.adapters, s_states[:-1], strict=True)
            weighted["multi_supervision"] = (
                sum(F.cross_entropy(self.student.scores(adapter(h)), labels) for adapter, h in heads)
                if self.adapters
                else student["loss"].new_zeros(())
            )
        loss = sum(unweighted.values()) + sum(getattr(self.weights, name) * v for name, v in weighted.items())
        log_keys = {term.name: term.log_key for term in LOSS_TERMS}
        terms = {**unweighted, **{log_keys[name]: value for name, value in weighted.items()}}
        return {"loss": loss, "terms": {k: v.detach() for k, v in terms.items()}, "user": student["user"]}
