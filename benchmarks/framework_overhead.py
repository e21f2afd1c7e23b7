"""What the framework costs on top of the maths.

- ``framework.digits_logging``: a default digits training epoch (shipped teacher -> mlp_small, TALS, the
  teacher-logit cache, TensorBoard logger, no observer callbacks, no validation) through
  ``DistillationModule`` in a Lightning ``Trainer``, against the same run with the module's logging
  switched off (``log``, ``log_dict``, its training-scalar window and its publication all no-ops; the
  non-finite check stays on both sides). Bound: 1.05.
- ``framework.plain_loop``: one resnet32x4 -> resnet8x4 Hinton-KD step at batch 64 (CIFAR-100 shapes,
  random data already in memory) through ``DistillationModule`` in a Lightning ``Trainer``, against a
  plain PyTorch loop doing the same teacher forward, student forward, loss, backward and SGD step.
  Bound: 1.05. A step is timed from one batch's start to the next's, so everything the loop does
  between steps counts.
"""

from __future__ import annotations

import statistics
import tempfile
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger

from benchmarks.harness import (
    Budget, Clock, Measurement, Variant, budget, comparison, device, interleave, peak_memory_mb, reset_peak_memory,
)
from distill.callback_hooks import skip_unused_hooks
from distill.data import DigitsDataModule
from distill.losses import kl_div
from distill.models import create
from distill.module import DistillationModule
from distill.pending_scalars import WRITER_QUEUE
from distill.policies import FixedTemperature


@skip_unused_hooks  # its inherited no-op hooks would add the same ~150 calls an epoch to both sides of every ratio
class UnitTimer(L.Callback):
    """Per-epoch (or per-step) times on the given clock, the first ``warmup`` units dropped.

    A unit runs from one epoch's (step's) start to the next one's, the last to the end of training: the
    module's own epoch-end work (Lightning calls it after the callbacks' ``on_train_epoch_end``) counts.
    """

    def __init__(self, clock: Clock, warmup: int, per: str = "epoch"):
        if per not in ("epoch", "step"):
            raise ValueError(f"per must be 'epoch' or 'step', got {per!r}")
        self.clock, self.warmup, self.per = clock, warmup, per
        self.marks: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        if self.per == "epoch":
            self.marks.append(self.clock())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.per == "step":
            self.marks.append(self.clock())

    def on_train_end(self, trainer, pl_module):
        self.marks.append(self.clock())

    @property
    def units(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])][self.warmup :]


class LoggingOff(DistillationModule):
    """``DistillationModule`` with every logging path a no-op (``log``, ``log_dict``, the training-scalar window
    and its publication): the floor the bound is measured against. The non-finite check stays: it is safety,
    not logging."""

    def log(self, *args, **kwargs):
        pass

    def log_dict(self, *args, **kwargs):
        pass

    def _log_train_step(self, *args, **kwargs):
        pass

    def _publish_train_window(self, *args, **kwargs):
        pass


# The epochs of one run, cycled: logging on, off, off again (the A/A control).
LOGGING_CYCLE = ("logging", "logging off", "logging off again")


class TimedHandOff(DistillationModule):
    """``DistillationModule`` that times the end-of-training hand-off of its held events (``PendingScalars``) and the
    writer thread's work on them (``flush`` waits for its queue): ``handoff = (events, seconds)``. That work happens
    after a ``UnitTimer``'s last mark; a bench charges it to the epochs whose events it was."""

    def on_train_end(self) -> None:
        clock = Clock(self.device)
        events, start = len(self.pending_scalars.events), clock()
        super().on_train_end()
        for logger in self._trainer.loggers:
            logger.experiment.flush()
        self.handoff = (events, clock() - start)


class AlternatingLogging(TimedHandOff):
    """``DistillationModule`` that logs in epochs ``0, 3, 6, ...`` only (``LOGGING_CYCLE``) and is ``LoggingOff``
    in the others, so the two sides of the ratio alternate epoch by epoch inside one run: the drift of these
    machines (one digits epoch takes 25-55 ms from one run to the next) cancels, which it does not between
    whole runs. An epoch's last, partial window is published in its own epoch-end hook, so no logging work
    leaks into the next epoch."""

    def logging_on(self) -> bool:
        return LOGGING_CYCLE[self.current_epoch % len(LOGGING_CYCLE)] == "logging"

    def log(self, *args, **kwargs):
        if self.logging_on():
            super().log(*args, **kwargs)

    def log_dict(self, *args, **kwargs):
        if self.logging_on():
            super().log_dict(*args, **kwargs)

    def _log_train_step(self, *args, **kwargs):
        if self.logging_on():
            super()._log_train_step(*args, **kwargs)

    def _publish_train_window(self, *args, **kwargs):
        if self.logging_on():
            super()._publish_train_window(*args, **kwargs)


def quiet_trainer(root: str, callbacks: list, logger=None, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="auto", devices=1, num_sanity_val_steps=0, limit_val_batches=0, logger=logger or False,
        callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, **kwargs,
    )  # fmt: skip


def digits_logging(mode: str) -> list:
    """The digits epoch with logging against logging off, alternating epoch by epoch in each run."""
    on = device()
    # 3 x 12 timed epochs a run (one per side of LOGGING_CYCLE each), 5 runs; the A/A control says how stable
    # the median ratio was in this run.
    plan = budget(mode, Budget(repeats=5, warmup=3, timed=36))
    timed = max(plan.timed, len(LOGGING_CYCLE))  # every side of the cycle timed at least once (tiny mode)
    clock = Clock(on)
    root = tempfile.mkdtemp(prefix="bench-logging-")
    measurement = Measurement({name: [] for name in LOGGING_CYCLE}, {name: [] for name in LOGGING_CYCLE})
    handoffs: list[tuple[int, float]] = []  # per run: (events held, seconds to hand them to TensorBoard)
    for repeat in range(plan.repeats):
        L.seed_everything(0, verbose=False)
        reset_peak_memory(on)
        timer = UnitTimer(clock, plan.warmup)
        logger = TensorBoardLogger(root, name=f"run{repeat}", default_hp_metric=False, max_queue=WRITER_QUEUE)
        trainer = quiet_trainer(root, [timer], logger, max_epochs=plan.warmup + timed, log_every_n_steps=5)
        module = AlternatingLogging()
        trainer.fit(module, DigitsDataModule(batch_size=64))
        epochs = plan.warmup + timed
        logging_epochs = sum(LOGGING_CYCLE[epoch % len(LOGGING_CYCLE)] == "logging" for epoch in range(epochs))
        handoffs.append(module.handoff)
        for offset, name in enumerate(LOGGING_CYCLE):
            # unit k is epoch warmup + k; its side of the cycle is that epoch's. Each logging epoch is charged
            # its share of the hand-off to TensorBoard at the end of training.
            charge = module.handoff[1] / logging_epochs if name == "logging" else 0.0
            measurement.units[name].append(
                [t + charge for k, t in enumerate(timer.units) if (plan.warmup + k) % len(LOGGING_CYCLE) == offset]
                or [0.0]
            )
            measurement.memory_mb[name].append(peak_memory_mb(on))
    setup = {"data": "digits, batch 64, 21 steps an epoch", "pair": "digits_cnn -> mlp_small (cached teacher)",
             "policy": "TALS", "log_every_n_steps": 5, "unit": "epoch",
             "design": "one Trainer run per repeat, epochs cycling logging / off / off again",
             "tensorboard_handoff": "events held until the end of training (PendingScalars), handed over and "
             f"flushed there: median {statistics.median(1e6 * s / max(n, 1) for n, s in handoffs):.0f} us an "
             "event, charged to the logging epochs"}  # fmt: skip
    return [
        comparison(
            "framework.digits_logging",
            "digits training epoch, every metric logged vs the module's logging switched off",
            measurement, "logging", "logging off", on, bound=1.05, setup=setup,
            note="logged: train/loss (progress bar, TensorBoard), train/loss_ce, loss_kd, acc1 (TensorBoard)",
        ),
        comparison(
            "framework.noise_floor", "A/A control: logging off in two epochs of the same cycle", measurement,
            "logging off again", "logging off", on, setup=setup,
        ),
    ]  # fmt: skip


class SameBatches:
    """An iterable over a fixed list of batches (a sized 'data loader' for the Trainer)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def cifar_batches(count: int, batch_size: int, on: torch.device) -> list:
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randn(batch_size, 3, 32, 32, generator=generator).to(on),
         torch.randint(0, 100, (batch_size,), generator=generator).to(on),
         torch.arange(batch_size).to(on))
        for _ in range(count)
    ]  # fmt: skip


def kd_module(student: str, teacher: str, on: torch.device) -> DistillationModule:
    """A Hinton-KD module with a randomly initialised zoo teacher (the published files are not needed)."""
    torch.manual_seed(0)
    module = DistillationModule(student=student, teacher=None, temperature_policy=FixedTemperature(),
                                num_classes=100, input_shape=(3, 32, 32), teacher_cache=False)  # fmt: skip
    module.teacher = create(teacher, num_classes=100, input_shape=(3, 32, 32)).eval().requires_grad_(False)
    return module.to(on)


def plain_steps(student: str, teacher: str, batches: list, clock: Clock, warmup: int) -> list[float]:
    """The same work as a ``DistillationModule`` KD step, in a plain PyTorch loop."""
    module = kd_module(student, teacher, batches[0][0].device)
    student_net, teacher_net, policy = module.student.train(), module.teacher, module.temperature_policy
    optimizer = torch.optim.SGD(student_net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    marks = []
    for images, labels, _ in batches:
        marks.append(clock())
        with torch.no_grad():
            teacher_logits = teacher_net(images)
        student_logits = student_net(images)
        temperatures = policy(teacher_logits.float(), student_logits.float(), 1)
        ce = F.cross_entropy(student_logits.float(), labels, reduction="none")
        kd = kl_div(student_logits.float(), teacher_logits.float(), temperatures.student, temperatures.teacher)
        loss = (temperatures.ce_weight * ce + temperatures.kd_weight * kd).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    marks.append(clock())
    return [b - a for a, b in zip(marks, marks[1:])][warmup:]


def lightning_steps(student: str, teacher: str, batches: list, clock: Clock, warmup: int, root: str) -> list[float]:
    """Steps of ``DistillationModule`` in a ``Trainer`` (TensorBoard logging on, as a real run)."""
    timer = UnitTimer(clock, warmup, per="step")
    module = kd_module(student, teacher, batches[0][0].device)
    optimizer = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)  # noqa: E731
    module.optimizer_factory = optimizer
    logger = TensorBoardLogger(root, name="lightning", default_hp_metric=False, max_queue=WRITER_QUEUE)
    trainer = quiet_trainer(root, [timer], logger, max_epochs=1, log_every_n_steps=50)
    trainer.fit(module, train_dataloaders=SameBatches(batches))
    return timer.units


def plain_loop(mode: str) -> list:
    """resnet32x4 -> resnet8x4 at batch 64: Lightning against a plain loop."""
    on = device()
    # 5 pairs of runs on the CPU (40 steps of 1.3-2.3 s): with 3 pairs the same code read 1.001 and 1.051 from one bench
    # run to the next.
    plan = budget(mode, Budget(repeats=5, warmup=1, timed=3), Budget(repeats=5, warmup=10, timed=50))
    student, teacher = ("resnet8", "resnet8") if mode == "tiny" else ("resnet8x4", "resnet32x4")
    batch_size = 4 if mode == "tiny" else 64
    clock = Clock(on)
    root = tempfile.mkdtemp(prefix="bench-plain-")
    batches = cifar_batches(plan.warmup + plan.timed, batch_size, on)
    measurement = interleave(
        [Variant("lightning", lambda: lightning_steps(student, teacher, batches, clock, plan.warmup, root)),
         Variant("plain loop", lambda: plain_steps(student, teacher, batches, clock, plan.warmup))],
        plan.repeats, on,
    )  # fmt: skip
    return [
        comparison(
            "framework.plain_loop",
            f"{teacher} -> {student} KD step, DistillationModule in a Trainer vs a plain PyTorch loop",
            measurement, "lightning", "plain loop", on, bound=1.05,
            setup={"batch": batch_size, "classes": 100, "input": [3, 32, 32], "unit": "step", "optimizer": "SGD"},
        )  # fmt: skip
    ]


def run(mode: str) -> list:
    warnings.filterwarnings("ignore")
    return [*digits_logging(mode), *plain_loop(mode)]
