"""The contract of a composed method: an object the one ``DistillationModule`` calls in its training step
where the plain frame would compute the student's loss (Block-KD is one, ``blockwise.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

# The module's ``distillation_terms(student_logits, teacher_logits, labels, epoch, temperatures=None)``:
# the policy + divergence frame for one pair of logits, -> (task [B], distill [B], per_sample dict).
Frame = Callable[..., tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]


class StepLoss(NamedTuple):
    """What a training step's loss computation hands back to the module.

    Attributes:
        loss: 0-d, in the autograd graph: what the optimizer minimises.
        task: 0-d, detached: the cross-entropy part of ``loss`` (logged as ``train/loss_ce``; the rest
            of ``loss`` is logged as ``train/loss_kd``).
        student_logits: ``[B, C]`` student logits (for the training accuracy).
        per_sample: the student's own frame values, ``[B]`` each, named as ``module.PER_SAMPLE_FIELDS``
            (without ``index``, which the module adds).
        scalars: extra 0-d detached scalars, published as ``train/<name>`` with the training window;
            the keys are the method's ``scalar_names()``.
    """

    loss: torch.Tensor
    task: torch.Tensor
    student_logits: torch.Tensor
    per_sample: dict[str, torch.Tensor]
    scalars: dict[str, torch.Tensor] = {}


class DistillationMethod(nn.Module):
    """A method that needs more than one pair of logits per step (e.g. hybrid student/teacher models).

    Its learnable parts (connectors, ...) are submodules, so the module's optimizer trains them and its
    checkpoints carry them; they are not part of the student, so an exported student never holds them.

    Subclasses implement ``setup`` (build the parts once the student and teacher exist, before the
    optimizer is made), ``forward`` (the step's loss) and, when they publish scalars, ``scalar_names``.
    """

    def setup(self, student: nn.Module, teacher: nn.Module, input_shape: Sequence[int]) -> None:
        """Called once by ``DistillationModule.__init__`` with the student, the frozen teacher and the image shape."""

    def scalar_names(self) -> tuple[str, ...]:
        """Names of ``StepLoss.scalars`` (fixed after ``setup``; default: none)."""
        return ()

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor, epoch: int, frame: Frame
    ) -> StepLoss:
        """The step's loss on ``images`` ``[B, *input_shape]`` with ``labels`` ``[B]`` and the frozen teacher's
        ``teacher_logits`` ``[B, C]``; every KD term goes through ``frame`` (epoch counted from 1)."""
        raise NotImplementedError
