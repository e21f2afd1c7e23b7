"""``DistillationModule``: one LightningModule for every logit-distillation method.

The data path, top to bottom (``training_step``):

    batch -> teacher logits (no_grad) -> student logits -> policy temperatures
          -> per-sample divergence and CE -> weighted mean

    loss_i = ce_weight_i * CE(s_i, y_i) + kd_weight_i * D(s_i / Ts_i, t_i / Tt_i)

The maths lives in ``distill.losses``, ``distill.policies`` and ``distill.divergences``; this module
only composes them, logs, and keeps the teacher frozen. ``teacher=None`` trains plain cross-entropy
(teachers and CE-only baselines go through the same path).

A composed method (``method``, e.g. ``distill.methods.BlockwiseDistillation``) replaces the student's loss
when a step needs more than one pair of logits; each of its KD terms still goes through the same frame
(``distillation_terms``: the policy's temperatures and weights, the divergence).

Where the training batches are a fixed function of the sample index (no random augmentation: digits,
Fashion-MNIST by default), the teacher's logits are computed once per sample at the start of fit and
read back by index in every step (the teacher-logit cache); otherwise the teacher runs on every batch.

Logging costs once per logging interval, not per step: the step hands its 0-d scalars to a window
(``distill.train_metrics``: references only, no kernel) that is read with one host copy and published as
means every ``trainer.log_every_n_steps`` steps; validation
and test metrics are torchmetrics states updated per batch and logged once per epoch (exact under DDP:
every rank's counts are summed).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from distill import rng_state
from distill.callback_hooks import skip_unused_hooks
from distill.divergences import KL, Divergence
from distill.errors import DistillError
from distill.methods import DistillationMethod, StepLoss
from distill.models import check_model_fits, create
from distill.nonfinite import NonFiniteWatch, agree_across_ranks, sample_list
from distill.optim import buffers_unchanged, in_second_pass
from distill.policies import SigmaAnchoredTemperature, TemperaturePolicy, Temperatures, logit_std
from distill.pending_scalars import PendingScalars
from distill.run_folder import newest_checkpoint
from distill.train_metrics import TrainMetricWindow
from teachers import load_teacher

TEACHER_PREFIX = "teacher."
# Images per teacher forward when the teacher-logit cache is filled. On the CPU 128 was the fastest measured: the
# Fashion-MNIST teacher (cnn_large) took 285 us an image in chunks of 128 against 487 us in chunks of 1024, whose
# activations no longer fit the caches (the digits teacher: 34 against 30 us). The fill runs once per fit.
CACHE_CHUNK = 128

# Names of the per-sample tensors that ``training_step`` returns under "per_sample" (all [B], detached).
PER_SAMPLE_FIELDS = (
    "index", "label", "sigma", "teacher_T", "student_T", "alpha", "kd_weight", "ce_weight",
    "kd", "ce", "teacher_correct", "student_correct",
)  # fmt: skip


@skip_unused_hooks
class HandOverOnException(L.Callback):
    """The module's held training events (``PendingScalars``: its scalars and the observers' events) to the loggers
    when ``fit`` ends in an exception; LightningModules get no ``on_exception`` hook of their own, callbacks do."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        write = getattr(pl_module, "_write_pending_scalars", None)
        if write is not None:
            write()


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
        teacher_cache: compute the teacher's logits once per training sample and read them back every
            step. ``None`` (default): on when the data module says its training batches are deterministic
            (``has_random_augmentation`` is False and it offers ``train_inputs()``); ``True``: required
            (an error where batches are randomly augmented); ``False``: run the teacher on every batch.
        channels_last: keep student, teacher and image batches in ``torch.channels_last`` memory format
            (faster convolutions with bf16 on tensor-core GPUs); no effect on the maths.
        compile: ``torch.compile`` the student's and the teacher's forward (``nn.Module.compile``, in
            place, so checkpoint keys are unchanged); the first steps pay the compilation.
        compile_backend: the ``torch.compile`` backend (``inductor``; ``aot_eager``/``eager`` to debug).
        method: a composed method that computes the training loss instead of the student's frame term
            (``distill.methods.BlockwiseDistillation``: Block-KD); its own parameters (connectors) are
            trained and checkpointed with the student but are not part of it. Needs a teacher.
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
        teacher_cache: bool | None = None,
        channels_last: bool = False,
        compile: bool = False,
        compile_backend: str = "inductor",
        method: DistillationMethod | None = None,
    ):
        super().__init__()
        input_shape = [int(size) for size in input_shape]  # a list keeps hparams.yaml plain YAML
        self.save_hyperparameters()
        # Built from Python (not the CLI, which records these as class_path/init_args dicts): objects would be
        # pickled into every checkpoint, which then no longer loads with weights_only=True. Keep them out;
        # `load_from_checkpoint(path, temperature_policy=..., ...)` takes them again.
        for name in ("temperature_policy", "divergence", "optimizer", "lr_scheduler", "method"):
            if not isinstance(self.hparams.get(name), (dict, type(None))):
                del self.hparams[name]
        try:
            self.student = create(student, num_classes=num_classes, input_shape=input_shape)
        except DistillError as error:
            raise DistillError(f"model.student: {error}") from None
        check_model_fits(self.student, num_classes, input_shape, f"model.student ({student})")
        self.teacher = load_teacher(teacher, num_classes, input_shape) if teacher is not None else None
        self.temperature_policy = temperature_policy if temperature_policy is not None else SigmaAnchoredTemperature()
        self.temperature_policy.setup(num_classes)
        self.divergence = divergence if divergence is not None else KL()
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.teacher_cache = teacher_cache
        self.method = method
        if method is not None:
            if self.teacher is None:
                raise DistillError(
                    f"model.method: {type(method).__name__} needs a teacher but model.teacher is null; "
                    "set model.teacher or model.method=null"
                )
            method.setup(self.student, self.teacher, input_shape)  # before the optimizer exists: its parts train
        self.channels_last = bool(channels_last)
        for network in (self.student, self.teacher, self.method):
            if network is not None and self.channels_last:
                network.to(memory_format=torch.channels_last)
            # A method runs the models stage by stage (not through their compiled forward): it is left uncompiled.
            if network is not None and compile and network is not self.method:
                network.compile(backend=compile_backend)
        # [N, C] teacher logits by training-sample index, filled at the start of fit (never checkpointed).
        self.register_buffer("cached_teacher_logits", None, persistent=False)
        top_k = min(5, num_classes)
        self.train_window = TrainMetricWindow(method.scalar_names() if method is not None else ())
        self.pending_scalars = PendingScalars()  # the windows' means, waiting for the loggers
        # The step's teacher logits and per-sample values, for SAM's second pass. A dict: setting an attribute of an
        # nn.Module twice a step cost about 20 us in a digits run (its __setattr__ checks for parameters and modules).
        self._first_pass: dict[str, Any] = {}
        # Per-sample losses and teacher stds since the last finiteness check (references only; see check_finite).
        self.nonfinite = NonFiniteWatch()
        # Validation/test: states updated per batch, computed (and summed over DDP ranks) once per epoch.
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                for stage in ("val", "test", "test_teacher")
                for name, k in (("acc1", 1), ("acc5", top_k))
            }
        )
        self.mean_losses = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})

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

    def training_teacher_logits(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` teacher logits of a training batch: read from the cache by sample index where it is
        filled, else the live teacher."""
        if self.cached_teacher_logits is not None:
            return self.cached_teacher_logits[index.to(self.cached_teacher_logits.device)]
        return self.teacher_logits(images)

    def setup(self, stage: str) -> None:
        # The command line links num_classes and input_shape from the data; a module built in Python may disagree.
        data = self.trainer.datamodule
        for name, mine in (("num_classes", self.hparams.num_classes), ("input_shape", list(self.hparams.input_shape))):
            declared = getattr(data, name, None)
            if declared is not None and (list(declared) if name == "input_shape" else int(declared)) != mine:
                raise DistillError(
                    f"model.{name}: the models were built for {mine} but the data ({type(data).__name__}) gives "
                    f"{declared}; build the module with {name}={declared} (the distill command links it from the data)"
                )

    # -- the teacher-logit cache -----------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.cached_teacher_logits = None
        if self.teacher is None or self.teacher_cache is False:
            return
        data = self.trainer.datamodule
        deterministic = data is not None and not getattr(data, "has_random_augmentation", True)
        if not (deterministic and hasattr(data, "train_inputs")):
            if self.teacher_cache:
                name = type(data).__name__ if data is not None else "the training data"
                raise DistillError(
                    f"model.teacher_cache=true: {name} augments its training batches at random, so the teacher "
                    "must see every batch; use model.teacher_cache=false (or null: on only where batches are fixed)"
                )
            return
        self.cached_teacher_logits = self.compute_teacher_logits(data.train_inputs())
        bad_rows = ~torch.isfinite(self.cached_teacher_logits).all(dim=-1)
        if bad_rows.any():  # one host sync, once per fit
            samples = sample_list(bad_rows.nonzero().flatten().tolist())
            raise DistillError(
                f"model.teacher: the teacher gives non-finite logits for training samples [{samples}] (found when its "
                "logits were cached, before training); check the teacher checkpoint and those inputs"
            )

    @torch.no_grad()
    def compute_teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` teacher logits of ``images`` (``[N, *input_shape]``, any device), in chunks, under the
        trainer's precision context (so they equal what the step would compute), kept on this device.

        Every DDP rank computes all N rows itself: one teacher pass over the training set, no collective."""
        context = self.trainer.precision_plugin.forward_context() if self._trainer is not None else torch.no_grad()
        with context:
            memory_format = torch.channels_last if self.channels_last and images.dim() == 4 else torch.contiguous_format
            chunks = [
                self.teacher(chunk.to(self.device, memory_format=memory_format)) for chunk in images.split(CACHE_CHUNK)
            ]
        return torch.cat(chunks)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite()  # a NaN since the last check must stop the run before it reaches a checkpoint
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
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Image batches in channels_last format when asked (once per batch, on the device)."""
        images, *rest = batch
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return (images, *rest)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Student logits ``[B, C]``."""
        return self.student(images)

    def distillation_terms(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor,
        epoch: int,
        temperatures: Temperatures | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The frame's two per-sample terms, in the autograd graph, before the mean.

        Args:
            student_logits: ``[B, C]`` (any dtype; cast to float32 before any temperature arithmetic).
            teacher_logits: ``[B, C]``: the target (the teacher's logits, or any other target logits).
            labels: ``[B]``.
            epoch: counted from 1.
            temperatures: use these instead of asking the policy (a method reusing another term's).

        Returns:
            ``(task, distill, per_sample)``: ``task = ce_weight * CE(s, y)`` and ``distill = kd_weight *
            D(s / Ts, t / Tt)``, both ``[B]``, and a dict of ``[B]`` tensors named as ``PER_SAMPLE_FIELDS``
            (detached).
        """
        student = student_logits.float()
        teacher = teacher_logits.float()
        # Autocast off: under bf16-mixed/16-mixed it would run a learned policy's layers (CTKD's MLP) and the loss's
        # matmuls in 16 bits; temperatures and losses are computed in float32 (the weights are float32 anyway).
        # (Entering torch.autocast costs about 20 us a step in a digits run: skipped where autocast is off.)
        device_type = student.device.type
        with torch.autocast(device_type, enabled=False) if torch.is_autocast_enabled(device_type) else nullcontext():
            # A policy's own sigma describes the logits it was given: these, unless the temperatures were passed in.
            sigma = None
            if temperatures is None:
                temperatures = self.temperature_policy(teacher, student, epoch)
                sigma = temperatures.sigma
            ce = F.cross_entropy(student, labels, reduction="none")
            kd = self.divergence(student, teacher, labels, temperatures.student, temperatures.teacher, epoch)
            task, distill = temperatures.ce_weight * ce, temperatures.kd_weight * kd
        detached = temperatures.detach()
        per_sample = {
            "label": labels,
            "sigma": logit_std(teacher) if sigma is None else detached.sigma,
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
        return task, distill, per_sample

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
        task, distill, per_sample = self.distillation_terms(student_logits, teacher_logits, labels, epoch)
        return (task + distill).mean(), per_sample

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor) -> StepLoss:
        """The step's loss: the student's frame term, or the composed method's loss (``[B, ...]`` batch)."""
        epoch = self.current_epoch + 1
        if self.method is not None:
            return self.method(images, labels, teacher_logits, epoch, self.distillation_terms)
        student_logits = self.student(images)
        loss, per_sample = self.distillation_loss(student_logits, teacher_logits, labels, epoch)
        task = (per_sample["ce_weight"] * per_sample["ce"]).mean()
        return StepLoss(loss, task, student_logits, per_sample)

    def training_step(self, batch, batch_idx: int):
        if in_second_pass(self._trainer):  # SAM's second forward-backward (distill/optim/sam.py)
            return self._sam_second_pass(batch)
        images, labels, index = batch
        if self.teacher is None:
            student_logits = self.student(images)
            ce = F.cross_entropy(student_logits.float(), labels, reduction="none")
            loss = ce.mean()
            self.nonfinite.add(self.global_step, self.current_epoch, index, ce, loss=loss)
            correct = (student_logits.detach().argmax(-1) == labels).sum()
            self._log_train_step(loss, loss, correct, len(labels))
            self._end_of_step()
            return loss
        teacher_logits = self.training_teacher_logits(images, index)
        self._first_pass["teacher_logits"] = teacher_logits  # SAM's second pass reuses them (frozen teacher)
        step = self.training_loss(images, labels, teacher_logits)
        step.per_sample["index"] = index
        values = step.per_sample
        self.nonfinite.add(
            self.global_step, self.current_epoch, index, values["ce"], values["kd"], values["ce_weight"],
            values["kd_weight"], values["sigma"], loss=step.loss,
        )  # fmt: skip
        self._log_train_step(step.loss, step.task, values["student_correct"].sum(), len(labels), step.scalars)
        self._end_of_step()
        self._first_pass["per_sample"] = step.per_sample  # what SAM's second pass returns for this step
        return {"loss": step.loss, "per_sample": step.per_sample}

    def _sam_second_pass(self, batch):
        """The loss at SAM's perturbed weights, for its gradient only. It logs nothing, leaves BN running statistics
        and policy state as the first pass left them, and returns the first pass's per-sample values: logs, metrics
        and callbacks all describe the step at the unperturbed weights."""
        images, labels, _ = batch
        with buffers_unchanged(self):
            if self.teacher is None:
                return F.cross_entropy(self.student(images).float(), labels)
            loss = self.training_loss(images, labels, self._first_pass["teacher_logits"]).loss
        return {"loss": loss, "per_sample": self._first_pass["per_sample"]}

    def _log_train_step(self, loss, loss_ce, correct, batch_size, scalars=None) -> None:
        """Add the step's scalars to the window (published every ``log_every_n_steps`` steps): the 0-d loss and its
        task part (``train/loss_kd`` is their difference).

        ``correct``: the 0-d number of correct top-1 predictions among ``batch_size`` samples. ``scalars`` are a
        composed method's extra 0-d values (Block-KD's ``stone_<i>_loss``), averaged alike.
        """
        self.train_window.add(loss, loss_ce, correct, batch_size, scalars)

    def _end_of_step(self) -> None:
        """Every ``log_every_n_steps`` steps: the non-finite check, then the window's means published.

        The means go to the progress bar (``train/loss``) and to ``trainer.callback_metrics`` at once, and to the
        loggers (TensorBoard ``train/loss``, ``train/loss_ce``, ...) through ``PendingScalars`` (handed over
        together, at the latest after 10 s and at the end of training), on global rank 0, with one host sync. ``self.log`` is not used here: Lightning's result collection costs about 2 ms a call (even
        once per interval that was 7% of a digits epoch); epoch-level validation/test metrics still use it.
        """
        trainer = self._trainer
        if trainer is not None and (self.global_step + 1) % max(trainer.log_every_n_steps, 1) == 0:
            self.check_finite()
            self._publish_train_window(self.global_step)

    def check_finite(self) -> None:
        """Stop the run with one ``DistillError`` line naming the first training step (and its samples) whose loss or
        teacher logits were not finite since the last check; one host sync.

        Called every logging interval, at every epoch end and before every checkpoint is written, on every rank (the
        module's hooks and the logging interval are the same on all ranks): under DDP the ranks agree on the decision
        and on the step reported, so all of them stop together.
        """
        trainer = self._trainer
        distributed = trainer is not None and trainer.world_size > 1 and torch.distributed.is_initialized()
        bad = self.nonfinite.any_bad(self.device)
        if distributed:
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        if not bad.item():
            self.nonfinite.clear()
            return
        self._write_pending_scalars()  # the scalars of the steps before the failure reach TensorBoard
        failure = self.nonfinite.first_bad()
        if distributed:
            failure = agree_across_ranks(failure, self.device)
        self.nonfinite.clear()
        raise DistillError(failure.message(self._newest_checkpoint()))

    def _newest_checkpoint(self) -> str | None:
        callback = self._trainer.checkpoint_callback if self._trainer is not None else None
        folder = getattr(callback, "dirpath", None)
        newest = newest_checkpoint([Path(folder).parent]) if folder else None
        return str(newest) if newest is not None else None

    def on_train_epoch_end(self) -> None:
        self.check_finite()
        # The epoch's last, partial window (also all a run shorter than one logging interval has), at the
        # step of its last batch (the optimizer has stepped since).
        if self.train_window.steps_since_pop:
            self._publish_train_window(self.global_step - 1)

    def on_train_end(self) -> None:
        self._write_pending_scalars()

    def configure_callbacks(self) -> list[L.Callback]:
        """``HandOverOnException``: a fit that ends in an exception (a preemption's checkpoint-and-exit, Ctrl+C, a
        crash) still hands its held training events to the loggers. (Once per trainer: the test after a fit asks
        again.)"""
        attached = self._trainer is not None and any(isinstance(c, HandOverOnException) for c in self._trainer.callbacks)
        return [] if attached else [HandOverOnException()]

    def _write_pending_scalars(self) -> None:
        if self._trainer is not None and self.pending_scalars.events:
            self.pending_scalars.write(self._trainer.loggers)

    def _publish_train_window(self, step: int) -> None:
        trainer = self._trainer
        means = self.train_window.pop_means()
        if not trainer.is_global_zero:
            return
        values = {f"train/{name}": value for name, value in means.items()}
        self.pending_scalars.add(values, step, trainer.loggers)  # one TensorBoard event per window
        trainer.progress_bar_metrics["train/loss"] = values["train/loss"]
        trainer.callback_metrics.update(zip(values, torch.tensor(list(values.values())).unbind()))

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels, _ = batch
        self._update_eval_metrics("val", self.student(images), labels)

    def test_step(self, batch, batch_idx: int) -> None:
        images, labels, _ = batch
        self._update_eval_metrics("test", self.student(images), labels)
        if self.teacher is not None:
            logits = self.teacher_logits(images)
            for name in ("acc1", "acc5"):
                self.metrics[f"test_teacher_{name}"].update(logits, labels)

    def _update_eval_metrics(self, stage: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.mean_losses[stage].update(F.cross_entropy(logits.float(), labels), weight=labels.shape[0])
        for name in ("acc1", "acc5"):
            self.metrics[f"{stage}_{name}"].update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        self._log_eval_metrics("val", prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_eval_metrics("test")
        if self.teacher is not None:
            for name in ("acc1", "acc5"):
                self.log(f"test/teacher_{name}", self.metrics[f"test_teacher_{name}"])

    def _log_eval_metrics(self, stage: str, prog_bar: bool = False) -> None:
        """Log the epoch's loss and accuracies (each metric object computes over every rank, then resets)."""
        self.log(f"{stage}/loss", self.mean_losses[stage], prog_bar=prog_bar)
        for name in ("acc1", "acc5"):
            self.log(f"{stage}/{name}", self.metrics[f"{stage}_{name}"], prog_bar=prog_bar and name == "acc1")

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
