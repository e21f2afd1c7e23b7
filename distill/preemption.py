"""``Preemption``: on SIGTERM or SIGUSR1, save a checkpoint at the end of the current training batch and exit cleanly.

- SIGTERM: what a scheduler sends before it kills a preempted job (SLURM: then SIGKILL after ``KillWait``, 30 s
  by default), and what ``kill`` sends. The run saves ``last.ckpt`` and exits; it is not requeued by itself
  (a cancelled job must stay cancelled; SLURM requeues preempted jobs by its own policy).
- SIGUSR1: SLURM's warning before the time limit (``#SBATCH --signal=USR1@90``). The run saves ``last.ckpt``,
  requeues its job (``scontrol requeue <job id>``) when it runs under SLURM, and exits.

The signal handler only records the signal: the checkpoint is written at the end of the training batch that is
running (in ``on_train_batch_end``, before Lightning's ``ModelCheckpoint`` callbacks, where Lightning's own
step checkpoints are written), so it holds a consistent state from which the run continues bit for bit. Under
DDP the ranks agree on the batch with one tiny all-reduce per batch (a signal may reach the ranks at different
moments), so all of them save and stop together. A signal that arrives during validation takes effect after the
validation, at the next training batch.

Lightning's own handling is replaced on purpose: its SIGTERM handler stops the run without a checkpoint, and its
SLURM SIGUSR1 handler writes ``hpc_ckpt_<n>.ckpt`` into ``default_root_dir`` from inside the signal handler, at
whatever point the run was (possibly in the middle of an optimizer step). The ``distill`` command turns the
latter off (``SLURMEnvironment(auto_requeue=False)``).

The process exits with status 128 + the signal's number (143 for SIGTERM, 138 for SIGUSR1), as a shell reports a
process killed by that signal: a preempted run did not finish (no test, no summary), and ``a && b`` stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from distill.callback_hooks import skip_unused_hooks

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(SystemExit):
    """Raised (on every rank) after the checkpoint is saved; its exit status is ``128 + signal``."""

    def __init__(self, signum: int):
        super().__init__(128 + int(signum))
        self.signum = int(signum)


def slurm_job_id(environment: dict[str, str] | None = None) -> str | None:
    """The id that ``scontrol requeue`` takes: ``<array job>_<task>`` in an array, else ``SLURM_JOB_ID``; ``None``
    outside SLURM."""
    environment = os.environ if environment is None else environment
    array_job, array_task = environment.get("SLURM_ARRAY_JOB_ID"), environment.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return environment.get("SLURM_JOB_ID") or None


def requeue_command(job_id: str) -> list[str]:
    """The command that puts job ``job_id`` back in the queue (it restarts from the top of its batch script)."""
    return ["scontrol", "requeue", job_id]


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """``<checkpoint folder>/last.ckpt`` of the run (the folder of its ``ModelCheckpoint`` callbacks, else
    ``<log dir or default_root_dir>/checkpoints``)."""
    callback = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath), None)
    if callback is not None:
        return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / "last.ckpt"


@skip_unused_hooks
class Preemption(L.Callback):
    """Save ``last.ckpt`` and exit cleanly on SIGTERM or SIGUSR1 during training (module docstring).

    Args:
        requeue: on SIGUSR1 under SLURM, requeue the job.
    """

    def __init__(self, requeue: bool = True):
        self.requeue = requeue
        self.received: int | None = None
        self._replaced: dict[int, object] = {}

    # -- the handlers, installed while training runs --------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed here, after Lightning registered its own handlers (just before the training stage); Lightning
        # restores the ones from before fit at its teardown.
        self.received = None
        for signum in HANDLED_SIGNALS:
            self._replaced[signum] = signal.getsignal(signum)
            signal.signal(signum, self._record)

    def _record(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum

    def _restore(self) -> None:
        for signum, handler in self._replaced.items():
            signal.signal(signum, handler)
        self._replaced = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    # -- acting on a signal, at a batch boundary ----------------------------------------------------------
    def agreed_signal(self, trainer: L.Trainer, device: torch.device) -> int:
        """The signal to act on now (0 for none), the same on every rank."""
        received = self.received or 0
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor(received, device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            received = int(flag.item())
        return received

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        signum = self.agreed_signal(trainer, pl_module.device)
        if not signum:
            return
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)  # every rank (Lightning gathers state and writes on rank 0)
        name = signal.Signals(signum).name
        note = "continue with --ckpt_path=last"
        if signum == signal.SIGUSR1 and self.requeue and trainer.is_global_zero:
            note = self._requeue() or note
        if trainer.is_global_zero:
            print(
                f"distill: stopped by {name} at epoch {trainer.current_epoch}, step {trainer.global_step}: checkpoint "
                f"saved to {path}; {note}",
                file=sys.stderr,
                flush=True,
            )
        raise Preempted(signum)

    def _requeue(self) -> str | None:
        """Requeue the SLURM job; what to tell the user (``None`` outside SLURM)."""
        job_id = slurm_job_id()
        if job_id is None:
            return None
        result = subprocess.run(requeue_command(job_id), capture_output=True, text=True)
        if result.returncode == 0:
            return f"SLURM job {job_id} requeued: it continues from this checkpoint in the same run folder"
        reason = " ".join((result.stderr or result.stdout).split()) or f"status {result.returncode}"
        return f"requeueing SLURM job {job_id} failed ({reason}): resubmit it with --ckpt_path=last"
