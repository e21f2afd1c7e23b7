"""Where a training loader's pass stands, so a checkpoint taken mid-epoch resumes at the next batch.

Both training loaders (``TensorBatchLoader`` and ``ResumableImageLoader``) keep one ``ResumePosition``
and hand its ``state_dict`` to Lightning's stateful-dataloader support: the epoch of the current pass and
how many batches of it were yielded. A resumed loader skips exactly those batches of that epoch; with
another world size or batch size the shards differ, so that epoch restarts from its first batch instead.
"""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_warn


class ResumePosition:
    """The (epoch, batches yielded) of a loader's pass, saved in checkpoints and restored on resume.

    Args:
        world_size: processes sharing each epoch (a checkpoint of another world size restarts its epoch).
        batch_size: samples per batch on this process (likewise).
        epoch: the epoch before any pass has started.
    """

    def __init__(self, world_size: int, batch_size: int, epoch: int = 0) -> None:
        self.world_size = world_size
        self.batch_size = batch_size
        self.epoch = epoch
        self.batches_yielded = 0
        self._resume_at: tuple[int, int] | None = None

    def start(self, epoch: int, num_batches: int) -> int:
        """Begin a pass over ``epoch`` (of ``num_batches`` batches); returns the first batch to yield:
        0, or after a restored checkpoint of this epoch the batch after the last one it had yielded."""
        start = 0
        if self._resume_at is not None:
            resume_epoch, resume_batches = self._resume_at
            self._resume_at = None
            if resume_epoch == epoch:
                start = min(resume_batches, num_batches)
        self.epoch, self.batches_yielded = epoch, start
        return start

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches_yielded", "world_size", "batch_size"}`` of the current (or last) pass."""
        return {
            "epoch": self.epoch,
            "batches_yielded": self.batches_yielded,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue epoch ``state["epoch"]`` after its first ``batches_yielded`` batches (same world size
        and batch size; otherwise that epoch restarts from its first batch, with a warning)."""
        same_layout = state["world_size"] == self.world_size and state["batch_size"] == self.batch_size
        if not same_layout:
            rank_zero_warn(
                f"resuming with world size {self.world_size} and batch size {self.batch_size} "
                f"(checkpoint: {state['world_size']}, {state['batch_size']}): epoch {state['epoch']} restarts "
                "from its first batch"
            )
        self._resume_at = (state["epoch"], state["batches_yielded"] if same_layout else 0)
        self.epoch, self.batches_yielded = state["epoch"], state["batches_yielded"]
