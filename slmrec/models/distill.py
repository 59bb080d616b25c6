"""SLMRec knowledge distillation: a small LLM recommender (m layers) learns from a deep one (l layers).

Both models are cut into n blocks; at each block boundary the student's last-position hidden state is
pulled towards the teacher's (cosine and L2 terms), and the student's first n - 1 boundaries also get
their own recommendation head ("multiple supervision"):

    L = CE(student) + λ1 Σ_i (1 - cos(h_s_i, h_t_i)) + λ2 Σ_i ||h_s_i - h_t_i||_2 + λ3 Σ_{i<n} CE(adapter_i(h_s_i))

A weight of 0 removes its term entirely (it is not even computed), which is how ablations are run.
Offline, the teacher is frozen, so its states at the block boundaries depend only on the training
sample: `TeacherStates` computes them once per trained teacher, and every offline student and ablation
variant reads them with its samples instead of running (or even loading) the teacher. A live frozen
teacher gives the same states and remains possible. Online, the teacher trains alongside on its own
CE; by default the alignment terms' gradients reach it too (as in the authors' code), and with
`teacher_gradients=False` its states are fixed targets (detached), so it is not pulled towards the
student.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from slmrec.batching import length_batches
from slmrec.errors import ArtifactError, DistillConfigError
from slmrec.io import atomic_path, read_artifact
from slmrec.models.blocks import block_boundaries
from slmrec.models.llmrec import DTYPES, LLMRec
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
        teacher_layers: int | None = None,
        teacher_gradients: bool = True,
    ) -> None:
        """`teacher` is the live teacher (online, or offline without cached states); offline students that
        read `TeacherStates` pass none, and `teacher_layers` places the block boundaries instead.
        `teacher_gradients` (online only): whether the alignment terms also train the teacher."""
        super().__init__()
        if online and teacher is None:
            raise DistillConfigError("online distillation trains its teacher alongside: it needs the teacher")
        self.student = student
        self.teacher = teacher
        self.weights = weights
        self.online = online
        self.teacher_gradients = online and teacher_gradients
        hidden = student.backbone.config.hidden_size
        teacher_layers = teacher.num_layers if teacher is not None else teacher_layers or student.num_layers
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

    def forward(
        self, input_ids: Tensor, labels: Tensor | None = None, teacher_states: Tensor | None = None
    ) -> dict[str, Tensor | dict[str, Tensor]]:
        """`teacher_states` [B, n, H]: the frozen teacher's states at the n boundaries (`TeacherStates`)."""
        student = self.student(input_ids, labels, output_layer_states=True)
        if labels is None:
            return student
        unweighted: dict[str, Tensor] = {CE_LOG_KEY: student["loss"]}
        weighted: dict[str, Tensor] = {}  # by LossTerm.name
        s_states = [student["layer_states"][:, s - 1] for _, s in self.boundaries]  # n x [B, H]
        if self.weights.needs_teacher or self.online:
            if self.online:
                assert self.teacher is not None  # an online Distiller is always built with its teacher
                teacher = self.teacher(input_ids, labels, output_layer_states=True)
                unweighted[TEACHER_CE_LOG_KEY] = teacher["loss"]
                teacher_states = teacher["layer_states"][:, [t - 1 for t, _ in self.boundaries]]
            elif teacher_states is None:
                if self.teacher is None:
                    raise DistillConfigError("the cosine and L2 terms need the teacher's states or the teacher")
                teacher_states = teacher_boundary_states(self.teacher, input_ids, [t for t, _ in self.boundaries])
            if not self.teacher_gradients:
                teacher_states = teacher_states.detach()
            t_states = teacher_states.float().unbind(1)  # n x [B, H]
            pairs = list(zip(s_states, t_states, strict=True))
            if self.weights.cos > 0:
                weighted["cos"] = cast(Tensor, sum(cosine_distance(s, t).mean() for s, t in pairs))
            if self.weights.l2 > 0:
                weighted["l2"] = cast(Tensor, sum(l2_distance(s, t).mean() for s, t in pairs))
        if self.weights.multi_supervision > 0:
            heads = zip(self.adapters, s_states[:-1], strict=True)
            weighted["multi_supervision"] = (
                cast(Tensor, sum(F.cross_entropy(self.student.scores(adapter(h)), labels) for adapter, h in heads))
                if self.adapters
                else student["loss"].new_zeros(())
            )
        loss = sum(unweighted.values()) + sum(getattr(self.weights, name) * v for name, v in weighted.items())
        log_keys = {term.name: term.log_key for term in LOSS_TERMS}
        terms = {**unweighted, **{log_keys[name]: value for name, value in weighted.items()}}
        return {"loss": loss, "terms": {k: v.detach() for k, v in terms.items()}, "user": student["user"]}


def cosine_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """1 - cos(h_s, h_t) per sample ([..., H] -> [...]): the λ1 term's summand, blind to the states' norms."""
    return 1 - F.cosine_similarity(student, teacher, dim=-1)


def l2_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """||h_s - h_t||_2 per sample ([..., H] -> [...]): the λ2 term's summand, which grows with the residual
    stream's norm (large in LLaMA-family models)."""
    return (student - teacher).norm(dim=-1)


@torch.no_grad()
def teacher_boundary_states(teacher: LLMRec, input_ids: Tensor, layers: list[int]) -> Tensor:
    """The frozen teacher's last-position states after each of `layers` (1-based): [B, len(layers), H]."""
    return teacher(input_ids, output_layer_states=True)["layer_states"][:, [t - 1 for t in layers]]


def samples_digest(input_ids: Tensor, labels: Tensor) -> str:
    """What identifies a training set sample by sample, so cached states are never paired with other samples."""
    digest = hashlib.sha256()
    for tensor in (input_ids, labels):
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class TeacherStates:
    """A trained teacher's states at the block boundaries, for every training sample of its students.

    `states[i]` ([n, H], in the teacher's dtype) belongs to sample i of the students' `NextItemDataset`;
    `samples` is that dataset's digest, checked when a student reads the file.
    """

    states: Tensor  # [N, n, H]
    teacher_layers: int
    layers: list[int]  # the teacher layers at the n boundaries, 1-based
    samples: str
    teacher_params: dict[str, int]

    @classmethod
    def compute(
        cls, teacher: LLMRec, input_ids: Tensor, labels: Tensor, blocks: int, dtype: str, batch_size: int
    ) -> TeacherStates:
        """Run the frozen teacher once over every sample, shortest histories together (less padding)."""
        if teacher.num_layers % blocks:
            raise DistillConfigError(
                f"distill.blocks = {blocks} does not divide the teacher's {teacher.num_layers} layers"
            )
        layers = [teacher.num_layers // blocks * i for i in range(1, blocks + 1)]
        teacher.eval()
        device = teacher.item_table.device
        hidden = teacher.backbone.config.hidden_size
        states = torch.empty(len(input_ids), len(layers), hidden, dtype=DTYPES[dtype])  # [N, n, H]
        lengths = (input_ids > 0).sum(1).numpy()
        for rows in tqdm(length_batches(lengths, batch_size), desc="teacher states", unit="batch"):
            index = torch.from_numpy(rows)
            states[index] = teacher_boundary_states(teacher, input_ids[index].to(device), layers).cpu().to(states.dtype)
        return cls(states, teacher.num_layers, layers, samples_digest(input_ids, labels), teacher.parameter_counts())

    def save(self, path: str | os.PathLike) -> None:
        metadata = {
            "teacher_layers": str(self.teacher_layers),
            "layers": json.dumps(self.layers),
            "samples": self.samples,
            "teacher_params": json.dumps(self.teacher_params, sort_keys=True),
        }
        with atomic_path(path) as tmp:
            save_file({"states": self.states.contiguous()}, str(tmp), metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TeacherStates:
        def read(file: str) -> TeacherStates:
            with safe_open(file, "pt") as handle:
                meta = handle.metadata() or {}
            missing = {"teacher_layers", "layers", "samples", "teacher_params"} - set(meta)
            if missing:
                raise ValueError(f"metadata lacks {sorted(missing)}")
            return cls(
                load_file(file)["states"],
                int(meta["teacher_layers"]),
                json.loads(meta["layers"]),
                meta["samples"],
                json.loads(meta["teacher_params"]),
            )

        return read_artifact(str(path), read)

    def check(
        self, path: str | os.PathLike, input_ids: Tensor, labels: Tensor, boundaries: list[tuple[int, int]]
    ) -> None:
        """Refuse states made for other samples or another block map (the rule rebuilds them; a hand-run cannot)."""
        layers = [t for t, _ in boundaries]
        if self.layers != layers:
            raise ArtifactError(
                f"{path}: teacher states are at teacher layers {self.layers}, but the student's block map needs "
                f"{layers}; rebuild them with the teacher_states rule"
            )
        if self.samples != samples_digest(input_ids, labels):
            raise ArtifactError(
                f"{path}: teacher states were computed for other training samples ({len(self.states)} of them; "
                f"the student has {len(labels)}): the data, max_len or targets_per_user changed; rebuild them "
                "with the teacher_states rule"
            )


@torch.no_grad()
def state_alignment(
    student: LLMRec, states: TeacherStates, input_ids: Tensor, blocks: int, batch_size: int
) -> list[dict[str, float]]:
    """How far a student's block-boundary states lie from the teacher's, averaged over its training samples.

    The check that distillation does what it claims: a distilled student should sit closer to its teacher
    than the same student trained on CE alone or not trained at all. One entry per block, with both
    states' mean norms, which give the L2 distance its scale. `states` must be for these `input_ids`.
    """
    boundaries = block_boundaries(states.teacher_layers, student.num_layers, blocks)
    if states.layers != [t for t, _ in boundaries]:
        raise DistillConfigError(
            f"the teacher states are at layers {states.layers}, but {blocks} blocks of a {student.num_layers}-layer "
            f"student align with teacher layers {[t for t, _ in boundaries]}"
        )
    student.eval()
    device = student.item_table.device
    totals = torch.zeros(4, len(boundaries), dtype=torch.float64)  # cos distance, L2, |h_s|, |h_t| per block
    lengths = (input_ids > 0).sum(1).numpy()
    for rows in tqdm(length_batches(lengths, batch_size), desc="state alignment", unit="batch"):
        index = torch.from_numpy(rows)
        layer_states = student(input_ids[index].to(device), output_layer_states=True)["layer_states"]
        s = layer_states[:, [s - 1 for _, s in boundaries]].cpu()  # [b, n, H]
        t = states.states[index].float()  # [b, n, H]
        measures = (cosine_distance(s, t), l2_distance(s, t), s.norm(dim=-1), t.norm(dim=-1))  # 4 x [b, n]
        totals += torch.stack(measures).sum(1).double()
    means = (totals / len(input_ids)).tolist()
    keys = ("cos_distance", "l2_distance", "student_norm", "teacher_norm")
    return [
        {"teacher_layer": t, "student_layer": s, **{key: means[k][i] for k, key in enumerate(keys)}}
        for i, (t, s) in enumerate(boundaries)
    ]
