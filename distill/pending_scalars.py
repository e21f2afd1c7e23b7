"""Training scalars handed to the loggers in batches instead of one event at a time.

TensorBoard's writer is a background thread: every event handed to it wakes that thread, which then
competes with the training loop for the GIL. On a digits epoch (21 steps, a window every 5 steps) that
contention, not the writing itself, was most of the logging cost (measured with ``make bench``: each window
handed over at once, 1.15x the epoch with logging off; handed over together at the epoch's end, 1.03x plus
3% spilled into the next epoch while the thread wrote them). The windows' means are still computed and
published to the progress bar and ``callback_metrics`` at every interval; only the hand-off to the loggers
waits, at most ``max_delay_s`` (TensorBoard itself flushes its file only every 120 s, so what TensorBoard
shows is as fresh as before), and it always happens at the end of training and before a run stops on a
non-finite loss. The observer callbacks' events (temperature scalars, per-sample histograms) wait in the
same queue, for the same reason (measured with ``make bench``'s ``per_sample.*`` rows).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from distill.tensorboard_summary import write_summary

# An event's scalars: {name: float}, or (names, values) with values a [K] tensor still on its device, read
# (one host sync) only when the event is handed over, outside the training step.
Scalars = Mapping[str, float] | tuple[Sequence[str], torch.Tensor]


class PendingScalars:
    """Scalar events (``{name: float}`` at a step), and the observers' histogram events, waiting for the loggers.

    The module's training windows and the callbacks (``TemperatureMonitor``, ``PerSampleStatistics``) of a
    ``DistillationModule`` share one instance (``pl_module.pending_scalars``), so all of a run's training events
    reach TensorBoard together.

    Args:
        max_delay_s: hand everything over once the oldest pending event is this old (checked when one is added).
    """

    def __init__(self, max_delay_s: float = 10.0):
        self.max_delay_s = max_delay_s
        self.events: list[tuple[Scalars, Mapping[str, np.ndarray], int]] = []
        self._oldest: float | None = None

    def add(self, scalars: Scalars, step: int, loggers, histograms: Mapping[str, np.ndarray] | None = None) -> None:
        """Queue one event (``histograms``: ``{tag: [N] array}``, written as TensorBoard histograms with it); hand
        every pending one to ``loggers`` when the oldest is ``max_delay_s`` old."""
        self.events.append((scalars, histograms or {}, step))
        now = time.monotonic()
        if self._oldest is None:
            self._oldest = now
        elif now - self._oldest >= self.max_delay_s:
            self.write(loggers)

    def write(self, loggers) -> None:
        """Every pending event to every logger, in order (one TensorBoard event each); then none pending."""
        for scalars, histograms, step in self.events:
            write_summary(loggers, histograms, as_floats(scalars), step)
        self.events.clear()
        self._oldest = None


def as_floats(scalars: Scalars) -> dict[str, float]:
    """``{name: float}`` from either form of an event's scalars."""
    if isinstance(scalars, tuple):
        names, values = scalars
        return dict(zip(names, values.tolist()))
    return dict(scalars)
