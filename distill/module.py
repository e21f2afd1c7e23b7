"""``DistillationModule``: one LightningModule for every logit-distillation method.

The data path, top to bottom (``training_step``):

    batch -> teacher logits (no_grad) -> student logits -> policy temperatures
          -> per-sample divergence and CE -> weighted mean

    loss_i = ce_weight_i * CE(s_i, y_i) + kd_weight_i * D(s_i / Ts_i, t_i / Tt_i)

The maths lives in ``distill.losses``, ``distill.policies`` and ``distill.divergences``; this module
only composes them, logs, and keeps the teacher frozen. ``teacher=None`` trains plain cross-entropy
(teachers and CE-only baselines go through the same path).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from distill import rng_state
from distill.divergences import KL, Divergence
from distill.models import create
from distill.optim import buffers_unchanged, in_second_pass
from distill.policies import SigmaAnchoredTemperature, TemperaturePolicy, logit_std
from teachers import load_teacher

TEACHER_PREFIX = "teacher."

# Names of the per-sample tensors that ``training_step`` returns under "per_sample" (all [B], detached).
PER_SAMPLE_FIELDS = (
    "index", "label", "sigma", "teacher_T", "student_T", "alpha", "kd_weight", "ce_weight",
    "kd", "ce", "teacher_correct", "student_correct",
)  # fmt: skip


class DistillationModule(L.LightningModule):
    """A student, an optional frozen teacher, a temperature policy and a divergence.

    Args:
        student: ``distill.models`` name of the student.
        teacher: ``teachers`` registry name or a teacher checkpoint path; ``None`` trains the student
            with cross-entropy only.
        temperature_policy: per-sample temperatures and weights (default: TALS).
        divergence: ``KL()`` (default) or ``DKD(...)``.
        num_classes: C (the command line links it from the data module).
        input_shape: ``(channels, height, width)`` (linked from the data module).
        optimizer: optimizer factory; ``None`` is SGD(lr=0.05, momentum=0.9, weight_decay=5e-4).
        lr_scheduler: scheduler factory, stepped per epoch; ``None`` is MultiStepLR([150, 180, 210], 0.1).
    """

    def __init__(
        self,
        student: str = "mlp_small",
        teacher: str | None = "digits_cnn",
        temperature_policy: TemperaturePolicy | None = None,
        divergence: Divergence | None = None,
        num_classes: int = 10,
        input_shape: Sequence[int] = (1, 8, 8),
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__()
        input_shape = [int(size) for size in input_shape]  # a list keeps hparams.yaml plain YAML
        self.save_hyperparameters()
        self.student = create(student, num_classes=num_classes, input_shape=input_shape)
        self.teacher = load_teacher(teacher, num_classes, input_shape) if teacher is not None else None
        self.temperature_policy = temperature_policy if temperature_policy is not None else SigmaAnchoredTemperature()
        self.temperature_policy.setup(num_classes)
        self.divergence = divergence if divergence is not None else KL()
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        top_k = min(5, num_classes)
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                for stage in ("train", "val", "test", "test_teacher")
                for name, k in (("acc1", 1), ("acc5", top_k))
            }
        )

    # -- the frozen teacher -------------------------------------------------------------------
    def train(self, mode: bool = True):
        """Switch the student (and policy) mode; the teacher stays in eval mode (BN running stats, no dropout)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` teacher logits under ``no_grad`` (not ``inference_mode``: a learnable
        temperature divides them inside the autograd graph)."""
        return self.teacher(images)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The teacher is rebuilt from its own file; keep its weights out of every student checkpoint.
        state = checkpoint["state_dict"]
        for key in [key for key in state if key.startswith(TEACHER_PREFIX)]:
            del state[key]
        checkpoint[rng_state.CHECKPOINT_KEY] = rng_state.capture()  # exact resume: same shuffles after

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if rng_state.CHECKPOINT_KEY in checkpoint:
            rng_state.restore(checkpoint[rng_state.CHECKPOINT_KEY])
        # Put the current teacher back so that loading stays strict for everything else.
        if self.teacher is not None:
            checkpoint["state_dict"].update(
                {TEACHER_PREFIX + key: value for key, value in self.teacher.state_dict().items()}
            )

    # -- the data path ------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Student logits ``[B, C]``."""
        return self.student(images)

    def distillation_loss(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The per-sample loss of the frame, kept per sample until the final mean.

        Args:
            student_logits: ``[B, C]`` (any dtype; cast to float32 before any temperature arithmetic).
            teacher_logits: ``[B, C]``.
            labels: ``[B]``.
            epoch: counted from 1.

        Returns:
            ``(loss, per_sample)``: the scalar mean loss and a dict of ``[B]`` tensors named as
            ``PER_SAMPLE_FIELDS`` (detached).
        """
        student = student_logits.float()
        teacher = teacher_logits.float()
        temperatures = self.temperature_policy(teacher, student, epoch)
        ce = F.cross_entropy(student, labels, reduction="none")
        kd = self.divergence(student, teacher, labels, temperatures.student, temperatures.teacher, epoch)
        loss = (temperatures.ce_weight * ce + temperatures.kd_weight * kd).mean()
        detached = temperatures.detach()
        per_sample = {
            "label": labels,
            "sigma": logit_std(teacher),
            "teacher_T": detached.teacher,
            "student_T": detached.student,
            "alpha": detached.alpha,
            "kd_weight": detached.kd_weight,
            "ce_weight": detached.ce_weight,
            "kd": kd.detach(),
            "ce": ce.detach(),
            "teacher_correct": teacher.argmax(-1) == labels,
            "student_correct": student.detach().argmax(-1) == labels,
        }
        return loss, per_sample

    def training_step(self, batch, batch_idx: int):
        if in_second_pass(self._trainer):  # SAM's second forward-backward (distill/optim/sam.py)
            return self._sam_second_pass(batch)
        images, labels, index = batch
        student_logits = self.student(images)
        if self.teacher is None:
            loss = F.cross_entropy(student_logits.float(), labels)
            self.log("train/loss_ce", loss, prog_bar=True)
            self._log_accuracy("train", student_logits, labels)
            self.log("train/loss", loss)
            return loss
        loss, per_sample = self.distillation_loss(
            student_logits, self.teacher_logits(images), labels, self.current_epoch + 1
        )
        per_sample["index"] = index
        weighted_ce = (per_sample["ce_weight"] * per_sample["ce"]).mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/loss_ce", weighted_ce)
        self.log("train/loss_kd", loss.detach() - weighted_ce)
        self._log_accuracy("train", student_logits, labels)
        self._first_pass_per_sample = per_sample  # what SAM's second pass returns for this step
        return {"loss": loss, "per_sample": per_sample}

    def _sam_second_pass(self, batch):
        """The loss at SAM's perturbed weights, for its gradient only. It logs nothing, leaves BN running statistics
        and policy state as the first pass left them, and returns the first pass's per-sample values: logs, metrics
        and callbacks all describe the step at the unperturbed weights."""
        images, labels, _ = batch
        with buffers_unchanged(self):
            student_logits = self.student(images)
            if self.teacher is None:
                return F.cross_entropy(student_logits.float(), labels)
            teacher_logits = self.teacher_logits(images)
            loss, _ = self.distillation_loss(student_logits, teacher_logits, labels, self.current_epoch + 1)
        return {"loss": loss, "per_sample": self._first_pass_per_sample}

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels, _ = batch
        logits = self.student(images)
        self.log("val/loss", F.cross_entropy(logits.float(), labels), prog_bar=True)
        self._log_accuracy("val", logits, labels, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        images, labels, _ = batch
        logits = self.student(images)
        self.log("test/loss", F.cross_entropy(logits.float(), labels))
        self._log_accuracy("test", logits, labels)
        if self.teacher is not None:
            self._log_accuracy("test_teacher", self.teacher_logits(images), labels, prefix="test/teacher_")

    def _log_accuracy(self, stage: str, logits: torch.Tensor, labels: torch.Tensor, prog_bar: bool = False,
                      prefix: str | None = None) -> None:  # fmt: skip
        prefix = prefix or f"{stage}/"
        for name in ("acc1", "acc5"):
            metric = self.metrics[f"{stage}_{name}"]
            metric(logits, labels)
            self.log(f"{prefix}{name}", metric, prog_bar=prog_bar and name == "acc1")

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        # Student and policy parameters (CTKD's theta) share one optimizer, weight decay included.
        parameters = [parameter for parameter in self.parameters() if parameter.requires_grad]
        if self.optimizer_factory is None:
            optimizer = torch.optim.SGD(parameters, lr=0.05, momentum=0.9, weight_decay=5e-4)
        else:
            optimizer = self.optimizer_factory(parameters)
        if self.lr_scheduler_factory is None:
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[150, 180, 210], gamma=0.1)
        else:
            scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
