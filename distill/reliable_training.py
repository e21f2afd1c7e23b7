"""What the ``distill`` command adds to every trainer so that long runs survive preemption and crashes.

- ``AtomicCheckpointIO``: checkpoints written atomically and durably, read as plain weights only.
- A ``ModelCheckpoint`` every ``checkpoint_every_n_steps`` training steps (``latest-step<step>.ckpt``, and
  ``last.ckpt``), besides the per-epoch ones of configs/base.yaml: a run resumes mid-epoch.
- ``Preemption``: SIGTERM / SIGUSR1 save ``last.ckpt`` at the end of the current batch and exit cleanly
  (SIGUSR1 under SLURM also requeues the job).
- Under SLURM, ``SLURMEnvironment(auto_requeue=False)``: Lightning's own SIGUSR1 handler (an ``hpc_ckpt`` written
  from inside the signal handler, outside the run folder) would race ``Preemption``.

Each is added only where the config did not already give one of its kind.
"""

from __future__ import annotations

from typing import Any

from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
from lightning.fabric.plugins.io import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from distill.checkpoint_io import AtomicCheckpointIO
from distill.preemption import Preemption

# ckpt_path values that Lightning resolves itself (validate/test): not files to check beforehand.
LIGHTNING_CHECKPOINT_NAMES = ("best", "last", "hpc", "registry")
STEP_CHECKPOINT_FILENAME = "latest-step{step:07d}"


class StepCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` every N training steps that leaves the end of training to the per-epoch checkpoints.

    Lightning's ``on_train_end`` writes ``last.ckpt`` once more from a callback that has not saved yet (any run
    shorter than N steps), after the epoch counter moved past the last epoch; where a per-epoch checkpoint keeps
    ``last.ckpt`` too, that file stays the last epoch's.
    """

    def on_train_end(self, trainer, pl_module) -> None:
        others = [cb for cb in trainer.checkpoint_callbacks if cb is not self and getattr(cb, "save_last", False)]
        if not others:
            super().on_train_end(trainer, pl_module)


def step_checkpoint(every_n_steps: int) -> StepCheckpoint:
    """Keeps the newest checkpoint taken every ``every_n_steps`` training steps, and refreshes ``last.ckpt``."""
    return StepCheckpoint(
        every_n_train_steps=every_n_steps,
        save_last=True,
        save_top_k=1,
        filename=STEP_CHECKPOINT_FILENAME,
        auto_insert_metric_name=False,
        enable_version_counter=False,  # one last.ckpt, whichever callback wrote it last (never last-v1.ckpt)
    )


def _as_list(value: Any) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def add_reliability_defaults(kwargs: dict[str, Any], config) -> None:
    """Add the plugins and callbacks above to the trainer's ``kwargs`` (``callbacks`` already filled in), given
    the instantiated subcommand ``config`` (``trainer.plugins``, ``trainer.enable_checkpointing``,
    ``checkpoint_every_n_steps``)."""
    plugins = _as_list(kwargs.get("plugins", config.get("trainer.plugins")))
    if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        plugins.append(AtomicCheckpointIO())
    if SLURMEnvironment.detect() and not any(isinstance(plugin, ClusterEnvironment) for plugin in plugins):
        plugins.append(SLURMEnvironment(auto_requeue=False))
    kwargs["plugins"] = plugins

    callbacks = kwargs["callbacks"]
    every = config.get("checkpoint_every_n_steps") or 0
    if every > 0 and config.get("trainer.enable_checkpointing") is not False:
        callbacks.append(step_checkpoint(every))
    if not any(isinstance(callback, Preemption) for callback in callbacks):
        callbacks.append(Preemption())
