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

Beyond the paper, two terms distil the teacher's scores over the items instead of its states (`score_terms`):

    kd_logits = T^2 KL(softmax(t / T) || softmax(s / T))                      (Hinton et al., 2015)
    kd_rank   = sum_k w_k CE(s, top_k(t)),  w = normalised(γp w_rank + γc w_conf + γo w_agree)   (DLLM2Rec)

The teacher's last boundary state is what its output projection reads, so its scores follow from the cached states
and that projection (`TeacherHead`): score distillation never runs the teacher either, and serves any student,
SASRec included (`slmrec.models.sasrec_student`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, cast

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
from slmrec.targets import CE_LOG_KEY, LOSS_TERMS, SCORE_TERM_NAMES, TEACHER_CE_LOG_KEY, TEACHER_TERMS

RANK_DECAY = 1.0  # w_rank = exp(-rank / RANK_DECAY): DLLM2Rec's fixed lambda, after Tang and Wang (2018)


@dataclass
class DistillWeights:
    """λ1 (cos), λ2 (l2), λ3 (multi_supervision) and the score terms' weights, named as `slmrec.targets.LOSS_TERMS`."""

    cos: float
    l2: float
    multi_supervision: float
    kd_logits: float
    kd_rank: float

    @classmethod
    def from_settings(cls, distill: dict[str, float]) -> DistillWeights:
        """From a student's `<term>_weight` keys (`slmrec.targets.student_distill`)."""
        return cls(**{term.name: float(distill[term.weight_key]) for term in LOSS_TERMS})

    @property
    def needs_teacher(self) -> bool:
        return any(getattr(self, name) > 0 for name in TEACHER_TERMS)

    @property
    def needs_scores(self) -> bool:
        return any(getattr(self, name) > 0 for name in SCORE_TERM_NAMES)


OUTPUT_WEIGHT, OUTPUT_BIAS = "output_proj.weight", "output_proj.bias"  # in a trained LLMRec's weights file


class TeacherHead(nn.Module):
    """What turns a trained teacher's final states into its scores over the items: its output projection and the
    item table it scores against, read from its weights file (the teacher itself is never built). Frozen buffers:
    they move with the student, and are never saved with it."""

    weight: Tensor  # [d, H]
    bias: Tensor  # [d]
    item_table: Tensor  # [items + 1, d]

    def __init__(self, weight: Tensor, bias: Tensor, item_table: Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().float().clone(), persistent=False)
        self.register_buffer("bias", bias.detach().float().clone(), persistent=False)
        self.register_buffer("item_table", item_table.detach().float().clone(), persistent=False)

    @classmethod
    def from_file(cls, path: str | os.PathLike, item_table: Tensor) -> TeacherHead:
        def read(file: str) -> tuple[Tensor, Tensor]:
            with safe_open(file, "pt") as handle:
                missing = {OUTPUT_WEIGHT, OUTPUT_BIAS} - set(handle.keys())
                if missing:
                    raise ArtifactError(
                        f"{file} holds no {sorted(missing)}: it is not a trained LLM recommender's weights"
                    )
                return handle.get_tensor(OUTPUT_WEIGHT), handle.get_tensor(OUTPUT_BIAS)

        weight, bias = read_artifact(str(path), read)
        if weight.shape[0] != item_table.shape[1]:
            raise ArtifactError(
                f"{path}: the teacher projects onto {weight.shape[0]} dimensions, but the item table has "
                f"{item_table.shape[1]}: it was trained on another SASRec table"
            )
        return cls(weight, bias, item_table)

    @torch.no_grad()
    def forward(self, final_states: Tensor) -> Tensor:
        """[B, H] final states -> [B, items + 1] float32 scores, the padding item at -inf (as `LLMRec.scores`)."""
        with torch.autocast(final_states.device.type, enabled=False):
            user = F.linear(final_states.float(), self.weight, self.bias)  # [B, d]
            logits = user @ self.item_table.T  # [B, items + 1]
        logits[:, 0] = float("-inf")
        return logits


def logits_kd(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T² KL(p_t || p_s) of the tempered softmaxes over all items, averaged over samples ([B, items + 1] each).

    Over all items, not sampled candidates: the students train on CE over all items too, the teacher's scores are
    one small product away, and a KL over a sample would depend on the sample. The padding column is left out.
    """
    s = F.log_softmax(student[:, 1:] / temperature, dim=-1)
    t = F.log_softmax(teacher[:, 1:] / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def rank_weights(student: Tensor, teacher: Tensor, k: int, gammas: tuple[float, float, float]) -> tuple[Tensor, Tensor]:
    """DLLM2Rec's importance weights of the teacher's top-K items: (items [B, K], weights [B, K], rows summing to 1).

    w_rank = exp(-rank) over ranks 1..K; w_conf = the teacher's softmax probability, normalised over its K (our
    teacher's confidence; DLLM2Rec's BIGRec teacher has a distance instead); w_agree = 1 where the student's own
    top-K holds the item. Each of the first two sums to 1, and the mix is normalised again.
    """
    top = teacher.topk(k, dim=1)  # values, indices: [B, K]
    ranks = torch.arange(1, k + 1, dtype=torch.float32, device=teacher.device)
    w_rank = torch.softmax(-ranks / RANK_DECAY, dim=0).expand(len(teacher), k)  # [B, K]
    w_conf = torch.softmax(top.values, dim=1)  # [B, K]: p_t(item) / sum of p_t over the K
    own = student.detach().topk(k, dim=1).indices  # [B, K]
    w_agree = (top.indices[:, :, None] == own[:, None, :]).any(-1).float()  # [B, K]
    gamma_position, gamma_confidence, gamma_consistency = gammas
    mixed = gamma_position * w_rank + gamma_confidence * w_conf + gamma_consistency * w_agree + 1e-8
    return top.indices, mixed / mixed.sum(1, keepdim=True)


def rank_kd(student: Tensor, teacher: Tensor, k: int, gammas: tuple[float, float, float]) -> Tensor:
    """The teacher's top-K items as extra positives of the student's own loss, CE over all items (DLLM2Rec trains
    its BCE students with BCE against a sampled negative; ours train on CE): Σ_k w_k CE(s, item_k), batch mean."""
    items, weights = rank_weights(student, teacher, min(k, student.shape[1] - 1), gammas)
    nll = -F.log_softmax(student, dim=-1).gather(1, items)  # [B, K]
    return (weights * nll).sum(1).mean()


def rank_gammas(settings: dict[str, Any]) -> tuple[float, float, float]:
    """kd_rank's (position, confidence, consistency) weights from a student's `distill` settings, checked."""
    gamma_position, gamma_confidence, gamma_consistency = (
        settings[f"kd_rank_gamma_{g}"] for g in ("position", "confidence", "consistency")
    )
    if not gamma_position + gamma_confidence + gamma_consistency > 0:
        raise DistillConfigError(
            "distill.kd_rank_gamma_position, kd_rank_gamma_confidence and kd_rank_gamma_consistency are all 0: "
            "kd_rank's item weights need one of them positive"
        )
    return gamma_position, gamma_confidence, gamma_consistency


def score_terms(
    student: Tensor, teacher: Tensor, weights: DistillWeights, settings: dict[str, Any]
) -> dict[str, Tensor]:
    """The score terms that are on, unweighted, by `LossTerm.name`: the student's and the (detached) teacher's
    logits over the items, [B, items + 1] each; `settings` are the student's `distill` settings."""
    teacher = teacher.detach()
    terms: dict[str, Tensor] = {}
    if weights.kd_logits > 0:
        terms["kd_logits"] = logits_kd(student, teacher, settings["kd_temperature"])
    if weights.kd_rank > 0:
        terms["kd_rank"] = rank_kd(student, teacher, settings["kd_rank_k"], rank_gammas(settings))
    return terms


def weighted_loss(
    unweighted: dict[str, Tensor], weighted: dict[str, Tensor], weights: DistillWeights
) -> dict[str, Tensor | dict[str, Tensor]]:
    """The total loss and its logged terms: `unweighted` by log key (CE), `weighted` by `LossTerm.name`."""
    loss = sum(unweighted.values()) + sum(getattr(weights, name) * v for name, v in weighted.items())
    log_keys = {term.name: term.log_key for term in LOSS_TERMS}
    terms = {**unweighted, **{log_keys[name]: value for name, value in weighted.items()}}
    return {"loss": cast(Tensor, loss), "terms": {k: v.detach() for k, v in terms.items()}}


def start_from_teacher(student: LLMRec, teacher: dict[str, Tensor], source: str) -> int:
    """Load the teacher's trained projections, and the LoRA of the layers the two share, into the student (whose
    layers are the teacher's first ones); returns how many tensors were copied. Only the multiple-supervision
    heads, which the teacher has not, start fresh."""
    own = student.trainable_state_dict()
    missing = sorted(set(own) - set(teacher))
    if missing:
        raise DistillConfigError(
            f"{source}: the teacher has no {missing[:3]}: its LoRA targets differ from the student's"
        )
    for key, value in own.items():
        if teacher[key].shape != value.shape:
            raise DistillConfigError(
                f"{source}: {key} is {tuple(teacher[key].shape)} in the teacher and {tuple(value.shape)} in the "
                "student: their LoRA settings (r, target modules) must agree to start one from the other"
            )
    student.load_state_dict({key: teacher[key] for key in own}, strict=False)
    return len(own)


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
        head: TeacherHead | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """`teacher` is the live teacher (online, or offline without cached states); offline students that
        read `TeacherStates` pass none, and `teacher_layers` places the block boundaries instead.
        `teacher_gradients` (online only): whether the alignment terms also train the teacher. The score terms
        read `head` (a live teacher's own by default) and the kd_* keys of `settings`."""
        super().__init__()
        if online and teacher is None:
            raise DistillConfigError("online distillation trains its teacher alongside: it needs the teacher")
        self.student = student
        self.teacher = teacher
        self.weights = weights
        self.online = online
        self.teacher_gradients = online and teacher_gradients
        self.head = head
        self.settings = settings or {}
        if weights.needs_scores and head is None and teacher is None:
            raise DistillConfigError("the score terms need the teacher's output projection (its weights file)")
        if weights.kd_rank > 0:
            rank_gammas(self.settings)  # a bad setting fails before training, not at its first step
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
        t_states: tuple[Tensor, ...] = ()
        teacher_logits: Tensor | None = None  # [B, items + 1]
        if self.weights.needs_teacher or self.online:
            if self.online:
                assert self.teacher is not None  # an online Distiller is always built with its teacher
                teacher = self.teacher(input_ids, labels, output_layer_states=True)
                unweighted[TEACHER_CE_LOG_KEY] = teacher["loss"]
                teacher_logits = teacher["logits"]  # its own scores, as its CE read them (detached by score_terms)
                teacher_states = teacher["layer_states"][:, [t - 1 for t, _ in self.boundaries]]
            elif teacher_states is None:
                if self.teacher is None:
                    raise DistillConfigError("the terms that read the teacher need its states or the teacher")
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
        if self.weights.needs_scores:
            if teacher_logits is None:
                teacher_logits = self._teacher_scores(t_states[-1])  # from the final state
            weighted |= score_terms(student["logits"], teacher_logits, self.weights, self.settings)
        return {**weighted_loss(unweighted, weighted, self.weights), "user": student["user"]}

    @torch.no_grad()
    def _teacher_scores(self, final_states: Tensor) -> Tensor:
        """The teacher's scores over the items from its final states [B, H]: through its head read from file
        (cached states), or through the live teacher's own projection."""
        if self.head is not None:
            return self.head(final_states)
        assert self.teacher is not None  # checked in __init__
        return self.teacher.scores(self.teacher.output_proj(final_states.to(self.teacher.output_proj.weight.dtype)))


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
        self.check_samples(path, input_ids, labels)

    @property
    def final(self) -> Tensor:
        """[N, H]: the teacher's final-normed last state of each sample, what its output projection reads."""
        return self.states[:, -1]

    def check_samples(self, path: str | os.PathLike, input_ids: Tensor, labels: Tensor) -> None:
        """Refuse states made for other training samples."""
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
