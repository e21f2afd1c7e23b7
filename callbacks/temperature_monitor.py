"""``TemperatureMonitor``: the policy's temperatures and own state as scalars, and the run in
TensorBoard's HPARAMS tab."""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from distill.callback_hooks import skip_unused_hooks
from distill.pending_scalars import BatchRanges, as_floats
from distill.tensorboard_summary import write_summary

# Final metrics shown in the HPARAMS tab are logged under this prefix (e.g. "final/val/acc1"): re-using
# "val/acc1" would add a point to that curve.
FINAL_PREFIX = "final/"
FINAL_STAGES = ("val/", "test/")
# Declared in the HPARAMS tab at fit end, before the test that follows has produced its values.
DEFAULT_FINAL_METRICS = (
    "val/acc1", "val/acc5", "val/loss", "test/acc1", "test/acc5", "test/loss", "test/teacher_acc1", "test/teacher_acc5",
)  # fmt: skip


@skip_unused_hooks
class TemperatureMonitor(L.Callback):
    """Scalars of what the temperature policy decided, and hyperparameters with final metrics.

    Every ``trainer.log_every_n_steps`` steps, on the steps and x-axis Lightning uses for training
    scalars, written straight to the loggers by global rank 0:

    - ``temperature/teacher_T_mean``, ``..._min``, ``..._max`` and the same for ``student_T``: the
      batch mean and range of T_i (constant for fixed policies, spread for per-sample ones);
    - every key of ``pl_module.temperature_policy.monitored_state()`` as it is named there, e.g.
      CTKD's ``ctkd/temperature`` (learned T) and ``ctkd/lambda`` (gradient-reversal strength).

    Values are those of rank 0's own batch, not reduced over ranks (``PerSampleStatistics`` has the
    gathered distributions). They bypass ``pl_module.log``, which cost about 5 ms a step for these
    8 keys on a small CPU run (the 3% budget); so they are not in ``trainer.callback_metrics``. With a
    ``DistillationModule`` the step's T_i tensors wait, untouched, in its ``pending_scalars``; the means and
    ranges are worked out for all waiting steps at once when they reach the loggers with its training
    scalars (at most 10 s late, and at the end of training): no kernel and no host sync in the step.
    Other steps cost nothing: no tensor is touched.

    HPARAMS (global rank 0, every TensorBoard logger): at the end of ``fit`` the flattened module
    hyperparameters plus the data module, ``max_epochs`` and seed are written once, declaring the
    metrics ``final/<key>`` for every key of ``metrics`` and every ``val/*``/``test/*`` entry of
    ``trainer.callback_metrics``; the values present then are logged as ``final/<key>`` scalars at the
    last global step, and the ``test/*`` values follow at the end of the ``test`` that ``distill fit``
    runs next. Written once because TensorBoard keeps the *first* HPARAMS summary of a run and ignores
    later ones. A ``test`` without a ``fit`` writes it at its end. The ``final/`` prefix keeps these
    points off the ``val/acc1``-style curves.

    CE-only runs (no teacher) log no temperature scalars, but still get their HPARAMS entry, so that
    baselines sit next to distilled runs in the comparison table.

    Args:
        prefix: group of the T_i scalars.
        log_hparams: write the HPARAMS entry.
        metrics: ``callback_metrics`` keys declared as HPARAMS metrics before they exist (default: the
            ``val/`` and ``test/`` metrics ``DistillationModule`` logs).
    """

    def __init__(self, prefix: str = "temperature", log_hparams: bool = True, metrics: list[str] | None = None):
        self.prefix = prefix
        self.log_hparams = bool(log_hparams)
        self.metrics = list(DEFAULT_FINAL_METRICS if metrics is None else metrics)
        self._hparams_written = False
        self._last_step = -1

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        per_sample = outputs.get("per_sample") if isinstance(outputs, Mapping) else None
        if per_sample is None or not trainer.is_global_zero or not trainer.loggers:
            return
        # Lightning's own cadence: after the optimizer step, global_step = (batches stepped before) + 1.
        step = trainer.global_step
        every = trainer.log_every_n_steps
        if not every or step % every or step == self._last_step:
            return
        self._last_step = step
        event = temperature_ranges(per_sample, self.prefix, pl_module)
        pending = getattr(pl_module, "pending_scalars", None)
        if pending is not None:  # worked out and written with the module's own training scalars (no sync here)
            pending.add(event, step - 1, trainer.loggers)  # the batch's step
        else:  # another LightningModule: one host sync, on logging steps only
            write_summary(trainer.loggers, {}, as_floats(event), step - 1)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write_hparams(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hparams_written:
            self._log_final_metrics(trainer, stages=("test/",))  # for the names declared at fit end
        else:
            self._write_hparams(trainer, pl_module)

    def _write_hparams(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.log_hparams or not trainer.is_global_zero:
            return
        params = run_hyperparameters(trainer, pl_module)
        present = final_metrics(trainer.callback_metrics)
        names = dict.fromkeys([*(FINAL_PREFIX + key for key in self.metrics), *present], 0.0)
        experiment, start, end = hparams_summaries(params, names)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                writer = logger.experiment._get_file_writer()  # as Lightning's own log_hyperparams does
                for summary in (experiment, start, end):
                    writer.add_summary(summary, trainer.global_step)
        self._hparams_written = True
        self._log_final_metrics(trainer)

    def _log_final_metrics(self, trainer: L.Trainer, stages: tuple[str, ...] = FINAL_STAGES) -> None:
        if not self.log_hparams or not trainer.is_global_zero:
            return
        metrics = final_metrics(trainer.callback_metrics, stages)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and metrics:
                logger.log_metrics(metrics, step=trainer.global_step)
                logger.experiment.flush()


def hparams_summaries(params: Mapping[str, Any], metric_names: Mapping[str, float]):
    """TensorBoard's three HPARAMS summaries (experiment, session start, session end) for flat
    ``params`` and the metric tags in ``metric_names`` (only the names are used)."""
    from torch.utils.tensorboard.summary import hparams

    return hparams(dict(params), dict(metric_names))


def temperature_ranges(
    per_sample: Mapping[str, torch.Tensor], prefix: str = "temperature", pl_module: L.LightningModule | None = None
) -> BatchRanges:
    """The batch mean, min and max of ``teacher_T`` and ``student_T`` (``[B]`` each), named
    ``"<prefix>/teacher_T_mean"``, ..., and the policy's ``monitored_state()`` (if ``pl_module`` has a
    ``temperature_policy``), as an event whose numbers are worked out when it is handed over.

    Costs no kernel in the step, except one ``stack`` copying a policy's state (it changes in place as the
    policy learns).
    """
    policy = getattr(pl_module, "temperature_policy", None)
    state = policy.monitored_state() if policy is not None else {}
    extra = torch.stack([value.detach().float().reshape(()) for value in state.values()]) if state else None
    return BatchRanges(
        names=(f"{prefix}/teacher_T", f"{prefix}/student_T"),
        rows=(per_sample["teacher_T"].detach(), per_sample["student_T"].detach()),
        extra_names=tuple(state),
        extra=extra,
    )


def final_metrics(callback_metrics: Mapping[str, Any], stages: tuple[str, ...] = FINAL_STAGES) -> dict[str, float]:
    """The scalar entries of ``trainer.callback_metrics`` whose key starts with one of ``stages``
    (default ``val/`` and ``test/``) as ``{"final/val/acc1": float, ...}``."""
    metrics = {}
    for key, value in callback_metrics.items():
        if key.startswith(stages) and (not torch.is_tensor(value) or value.numel() == 1):
            metrics[FINAL_PREFIX + key] = float(value)
    return metrics


def run_hyperparameters(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
    """The run's hyperparameters flattened to ``{"a/b": int | float | bool | str}`` for TensorBoard.

    ``{"class_path": "x.Y", "init_args": {...}}`` entries become ``key: "Y"`` plus ``key/<arg>``;
    keys starting with ``_`` (Lightning's ``_instantiator``) are dropped; ``None``, sequences and
    other objects become strings.
    """
    params = flatten_hparams(dict(pl_module.hparams))
    data = trainer.datamodule
    if data is not None:
        params["data"] = type(data).__name__
        batch_size = getattr(data, "batch_size", None)
        if isinstance(batch_size, int):
            params["data/batch_size"] = batch_size
        params.update(flatten_hparams(dict(getattr(data, "hparams", {})), parent="data"))
    if trainer.max_epochs is not None:
        params["trainer/max_epochs"] = trainer.max_epochs
    if "PL_GLOBAL_SEED" in os.environ:
        params["seed"] = int(os.environ["PL_GLOBAL_SEED"])
    return params


def flatten_hparams(params: Mapping[str, Any], parent: str = "") -> dict[str, Any]:
    """Nested hyperparameters -> ``{"parent/key/...": scalar or str}`` (see ``run_hyperparameters``)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        key = str(key)
        if key.startswith("_"):
            continue
        name = f"{parent}/{key}" if parent else key
        if isinstance(value, (Mapping, Namespace)):
            value = _as_dict(value)
            class_path = value.pop("class_path", None)
            init_args = _as_dict(value.pop("init_args", None) or {})
            if class_path is not None:
                flat[name] = str(class_path).rsplit(".", 1)[-1]
            flat.update(flatten_hparams({**init_args, **value}, name))
            continue
        flat[name] = _scalar(value)
    return flat


def _as_dict(value: Mapping[str, Any] | Namespace) -> dict[str, Any]:
    return dict(vars(value)) if isinstance(value, Namespace) else dict(value)


def _scalar(value: Any) -> int | float | bool | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    if torch.is_tensor(value) and value.numel() == 1:
        return value.item()
    if isinstance(value, type):
        return value.__name__
    return str(value)
