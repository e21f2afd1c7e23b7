"""Block-KD: block-wise logit distillation through stepping-stone models (Yu et al., IEEE TAI 2024).

For the student S and its stepping stones N_1..N_m (``stepping_stones.py``), with Y^X the logits of X,
Y^T the frozen teacher's and Y^ens = (1/m) sum_i Y^{N_i}:

    L = alpha * (task(S) + sum_i w_i task(N_i))
      + beta  * (distill(S) + sum_i w_i distill(N_i))
      + gamma * (cross(S) + sum_i cross(N_i))

    task(X)    = mean_b ce_weight_b * CE(Y^X_b, y_b)                      the frame's CE part
    distill(X) = mean_b kd_weight_b * D(Y^X_b / Ts_b, Y^T_b / Tt_b)       the frame's KD part
    cross(X)   = mean_b kd_weight'_b * D(Y^X_b / Ts'_b, Y^ens_b / Tt'_b)  the frame's KD part, Y^ens as the teacher

Every term goes through the module's frame: the configured temperature policy decides the
temperatures and weights (so alpha and beta multiply the policy's own CE and KD weights, e.g.
kd.yaml's 0.1 and 0.9 x T^2) and the configured divergence D (KL, DKD) measures it. Stone weights
default to w_i = 1 / 2^(m - i) (the most student-like stone N_m weighs 1).

What the public summaries leave open is a constructor argument; the defaults are this project's
reading: alpha = beta = gamma = 1; the cross term off (``cross=False``, as ``configs/methods/blockkd.yaml``:
measured on the Fashion-MNIST study pair it cost 13 points, ``docs/blockkd.md``). With ``cross=True`` it is
unweighted over the models as the summary's formula; Y^ens detached (the ensemble is a target, as a teacher
is); the cross term's temperatures and weights from the policy applied to (Y^ens, Y^X)
(``cross_temperature="policy"``), or the ones the policy gave the same model against the teacher
(``"teacher"``). Connectors 1x1 conv + BN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from distill.errors import DistillError
from distill.methods.base import DistillationMethod, Frame, StepLoss
from distill.methods.connectors import ConnectorKind
from distill.methods.stepping_stones import SteppingStones
from distill.policies import Temperatures

FIELD = "model.method.init_args"
STONE_WEIGHT_RULES = ("halving", "uniform")
CROSS_TEMPERATURES = ("policy", "teacher")


def stone_weight_values(rule: str | Sequence[float], num_stones: int) -> list[float]:
    """The weights ``[w_1, ..., w_m]``: ``"halving"`` 1 / 2^(m - i), ``"uniform"`` 1, or the ``m`` values given."""
    if rule == "halving":
        return [0.5 ** (num_stones - i) for i in range(1, num_stones + 1)]
    if rule == "uniform":
        return [1.0] * num_stones
    if isinstance(rule, str) or len(rule) != num_stones:
        raise DistillError(
            f"{FIELD}.stone_weights: got {rule!r}, expected {' or '.join(map(repr, STONE_WEIGHT_RULES))} or a list of "
            f"{num_stones} numbers (one per stepping stone of this pair); e.g. set {FIELD}.stone_weights=halving"
        )
    return [float(weight) for weight in rule]


def _temperatures_of(per_sample: dict[str, torch.Tensor]) -> Temperatures:
    """The (detached) temperatures and weights a frame term recorded in its per-sample values."""
    return Temperatures(
        teacher=per_sample["teacher_T"], student=per_sample["student_T"], kd_weight=per_sample["kd_weight"],
        ce_weight=per_sample["ce_weight"], alpha=per_sample["alpha"],
    )  # fmt: skip


class BlockwiseDistillation(DistillationMethod):
    """Block-KD as a method of ``DistillationModule`` (``model.method``); formula in the module docstring.

    Args:
        alpha: weight of the CE terms (on top of the policy's ``ce_weight``).
        beta: weight of the KD terms against the teacher (on top of the policy's ``kd_weight``).
        gamma: weight of the cross term.
        stone_weights: ``"halving"`` (w_i = 1 / 2^(m - i)), ``"uniform"`` or a list of m weights.
        cross: add the cross term.
        detach_ensemble: Y^ens is a constant target (no gradient through it).
        cross_temperature: ``"policy"``: the policy decides the cross term's temperatures and weights from
            (Y^ens, Y^X); ``"teacher"``: reuse those it gave Y^X against the teacher (as constants).
        connector: ``"conv_bn"``, ``"conv_bn_relu"`` or ``"conv"`` (``distill.methods.connectors``).
        stem_is_block: count each model's stem as a block of its own; ``None``: each model says (the small CNNs
            and MLPs do; ``distill.methods.stepping_stones``).
        batch_stones: run the stones that reach the same teacher stage as one batch (same result).
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        stone_weights: Literal["halving", "uniform"] | list[float] = "halving",
        cross: bool = False,
        detach_ensemble: bool = True,
        cross_temperature: Literal["policy", "teacher"] = "policy",
        connector: ConnectorKind = "conv_bn",
        stem_is_block: bool | None = None,
        batch_stones: bool = True,
    ):
        super().__init__()
        if cross_temperature not in CROSS_TEMPERATURES:
            raise DistillError(
                f"{FIELD}.cross_temperature: got {cross_temperature!r}, expected one of {', '.join(CROSS_TEMPERATURES)}"
            )
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.stone_weight_rule = stone_weights if isinstance(stone_weights, str) else [float(w) for w in stone_weights]
        self.cross = bool(cross)
        self.detach_ensemble = bool(detach_ensemble)
        self.cross_temperature = cross_temperature
        self.connector = connector
        self.stem_is_block = stem_is_block
        self.batch_stones = bool(batch_stones)
        self.stones: SteppingStones | None = None
        self.stone_weights: list[float] = []

    def setup(self, student: nn.Module, teacher: nn.Module, input_shape: Sequence[int]) -> None:
        """Build the stepping stones and their connectors (the method's only parameters)."""
        self.stones = SteppingStones(
            student, teacher, input_shape, self.connector, stem_is_block=self.stem_is_block, batched=self.batch_stones
        )
        self.stone_weights = stone_weight_values(self.stone_weight_rule, self.stones.num_stones)

    def scalar_names(self) -> tuple[str, ...]:
        """``stone_<i>_loss`` for i = 1..m (stone i's alpha * task + beta * distill, before w_i), and ``loss_cross``
        (the cross term before gamma) when it is on."""
        names = tuple(f"stone_{i}_loss" for i in range(1, len(self.stone_weights) + 1))
        return names + (("loss_cross",) if self.cross else ())

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor, epoch: int, frame: Frame
    ) -> StepLoss:
        """Block-KD's loss on one batch (``images [B, *input_shape]``, ``labels [B]``, ``teacher_logits [B, C]``)."""
        if self.stones is None:
            raise RuntimeError("BlockwiseDistillation.setup(student, teacher, input_shape) was not called")
        student_logits, stone_logits = self.stones(images)
        scalars = {}
        task = distill = 0.0
        stone_terms = []
        for i, (weight, logits) in enumerate(zip(self.stone_weights, stone_logits), start=1):
            stone_task, stone_distill, stone_values = frame(logits, teacher_logits, labels, epoch)
            stone_task, stone_distill = stone_task.mean(), stone_distill.mean()
            task = task + weight * stone_task
            distill = distill + weight * stone_distill
            scalars[f"stone_{i}_loss"] = (self.alpha * stone_task + self.beta * stone_distill).detach()
            stone_terms.append(stone_values)
        loss = 0.0
        student_term = None
        if self.cross:
            if self.cross_temperature == "teacher":  # the cross term reuses the student's own temperatures
                student_term = frame(student_logits, teacher_logits, labels, epoch)
            cross = self._cross_term([student_logits, *stone_logits], stone_terms, student_term, labels, epoch, frame)
            loss = self.gamma * cross
            scalars["loss_cross"] = cross.detach()
        if student_term is None:  # the policy's last call is the student against the teacher (its monitored state)
            student_term = frame(student_logits, teacher_logits, labels, epoch)
        student_task, student_distill, per_sample = student_term
        task = self.alpha * (task + student_task.mean())
        loss = loss + task + self.beta * (distill + student_distill.mean())
        return StepLoss(loss, task.detach(), student_logits, per_sample, scalars)

    def _cross_term(self, logits: list[torch.Tensor], stone_terms: list[dict[str, torch.Tensor]], student_term,
                    labels: torch.Tensor, epoch: int, frame: Frame) -> torch.Tensor:  # fmt: skip
        """``sum_X mean_b kd_weight' * D(Y^X / Ts', Y^ens / Tt')`` over ``logits = [Y^S, Y^{N_1}, ...]`` (0-d)."""
        ensemble = torch.stack([stone.float() for stone in logits[1:]]).mean(0)
        if self.detach_ensemble:
            ensemble = ensemble.detach()
        given: list[Temperatures | None] = [None] * len(logits)
        if self.cross_temperature == "teacher":
            given = [_temperatures_of(values) for values in [student_term[2], *stone_terms]]
        cross = 0.0
        for model_logits, temperatures in zip(logits, given):
            cross = cross + frame(model_logits, ensemble, labels, epoch, temperatures=temperatures)[1].mean()
        return cross

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, stone_weights={self.stone_weight_rule!r}, "
            f"cross={self.cross}, detach_ensemble={self.detach_ensemble}, "
            f"cross_temperature={self.cross_temperature!r}, connector={self.connector!r}, "
            f"stem_is_block={self.stem_is_block}, batch_stones={self.batch_stones}"
        )
