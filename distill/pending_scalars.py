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

At the hand-off the events of one step (the module's window, ``TemperatureMonitor``'s scalars and
``PerSampleStatistics``' histograms all land on the same logging steps) become one TensorBoard event, and
every ``BatchRanges`` event's statistics are worked out together: one copy off the device and three
numpy reductions for all of them, instead of four kernels in the training step each. The histograms of all the
events are binned together too (``build_summaries``: one binning for all the histograms of one length).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from distill.tensorboard_summary import write_summaries

RANGE_KINDS = ("mean", "min", "max")
# Events TensorBoard's writer queue holds (``SummaryWriter(max_queue=...)``; its default is 10). A hand-off of a few
# hundred events into a 10-event queue trades the GIL with the writer thread event by event: 180 events took 29 ms
# of process CPU with 10 against 17 ms with 1000 (measured). The CLI's default logger and the benchmarks use this.
WRITER_QUEUE = 1000


@dataclass(frozen=True)
class BatchRanges:
    """Scalars worked out when handed over, not in the training step: the mean, min and max over the batch of
    each ``[B]`` tensor of ``rows`` (kept on its device, untouched: no kernel when the event is made), named
    ``f"{name}_{kind}" for kind in ("mean", "min", "max") for name in names``, then ``extra`` (``[E]``, a
    snapshot of values that change in place, such as a learned temperature) named ``extra_names``.

    The tensors must not be modified in place afterwards (a training step's fresh per-sample values are not).
    """

    names: tuple[str, ...]
    rows: tuple[torch.Tensor, ...]
    extra_names: tuple[str, ...] = ()
    extra: torch.Tensor | None = None

    def __post_init__(self):
        if len(self.names) != len(self.rows):
            raise ValueError(f"BatchRanges: {len(self.names)} names for {len(self.rows)} rows")
        if len(self.extra_names) != (0 if self.extra is None else self.extra.numel()):
            raise ValueError(f"BatchRanges: {len(self.extra_names)} extra names for {self.extra} values")


# An event's scalars: {name: float}; (names, values) with values a [K] tensor still on its device; or BatchRanges.
# The last two are read (one host sync for all of them) only when the events are handed over, outside the step.
Scalars = Mapping[str, float] | tuple[Sequence[str], torch.Tensor] | BatchRanges


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
        # (scalars, histograms, step, mean_tags): see ``add``
        self.events: list[tuple[Scalars, Mapping[str, np.ndarray], int, Collection[str]]] = []
        self._oldest: float | None = None

    def add(
        self,
        scalars: Scalars,
        step: int,
        loggers,
        histograms: Mapping[str, np.ndarray] | None = None,
        mean_tags: Collection[str] = (),
    ) -> None:
        """Queue one event (``histograms``: ``{tag: [N] array}``, written as TensorBoard histograms with it, and for
        each tag of ``mean_tags`` the scalar ``<tag>_mean`` read off its histogram); hand every pending one to
        ``loggers`` when the oldest is ``max_delay_s`` old."""
        self.events.append((scalars, histograms or {}, step, mean_tags))
        now = time.monotonic()
        if self._oldest is None:
            self._oldest = now
        elif now - self._oldest >= self.max_delay_s:
            self.write(loggers)

    def write(self, loggers) -> None:
        """Every pending event to every logger, in order, the events of one step as one (TensorBoard event, or
        ``log_metrics`` call); then none pending."""
        floats = resolve([event[0] for event in self.events])
        merged: dict[int, tuple[dict[str, float], dict[str, np.ndarray], set[str]]] = {}  # step -> its parts
        for values, (_, histograms, step, mean_tags) in zip(floats, self.events):
            scalars, tags, means = merged.setdefault(step, ({}, {}, set()))
            scalars.update(values)
            tags.update(histograms)
            means.update(mean_tags)
        write_summaries(loggers, [(step, (tags, scalars, means)) for step, (scalars, tags, means) in merged.items()])
        self.events.clear()
        self._oldest = None


def resolve(events: Sequence[Scalars]) -> list[dict[str, float]]:
    """``{name: float}`` for each event's scalars, in order. The tensors of every deferred event are read
    together: one host sync per device for all of the ``(names, values)`` events and one for the
    ``BatchRanges`` ones."""
    resolved: list[dict[str, float] | None] = [dict(event) if isinstance(event, Mapping) else None for event in events]
    pairs = [position for position, event in enumerate(events) if isinstance(event, tuple)]
    for position, values in zip(pairs, read_together([events[position][1] for position in pairs])):
        resolved[position] = dict(zip(events[position][0], values.tolist()))
    ranges = [position for position, event in enumerate(events) if isinstance(event, BatchRanges)]
    for position, values in zip(ranges, batch_ranges([events[position] for position in ranges])):
        resolved[position] = values
    return resolved  # type: ignore[return-value]


def read_together(tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Tensors as 1-D float64 numpy arrays, in order, read with one ``read_flat`` (one host copy) for all of them."""
    parts = [flat_float(tensor) for tensor in tensors]
    return np.split(read_flat(parts), np.cumsum([part.numel() for part in parts])[:-1]) if parts else []


def flat_float(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as a detached 1-D float32 tensor, creating no new tensor where it already is one (each costs a few
    microseconds, and a hand-off reads thousands)."""
    if tensor.requires_grad:
        tensor = tensor.detach()
    if tensor.dim() != 1:
        tensor = tensor.reshape(-1)
    return tensor if tensor.dtype == torch.float32 else tensor.float()


def batch_ranges(events: Sequence[BatchRanges]) -> list[dict[str, float]]:
    """Each ``BatchRanges`` event's scalars (see there), all worked out together: one concatenation of every row
    (and one of every ``extra``), one copy to the host, three segmented numpy reductions.

    A row's mean is computed in float64; min and max propagate NaN, as ``torch.aminmax`` does; an empty row
    gives NaN for all three.
    """
    if not events:
        return []
    rows = [flat_float(row) for event in events for row in event.rows]
    lengths = np.array([row.numel() for row in rows])
    values = read_flat(rows)
    statistics = np.full((len(RANGE_KINDS), len(rows)), np.nan)  # [mean / min / max, row]
    filled = lengths > 0
    if filled.any():
        starts = (np.cumsum(lengths) - lengths)[filled]  # empty rows hold no value: the segments stay exact
        statistics[0, filled] = np.add.reduceat(values, starts) / lengths[filled]
        statistics[1, filled] = np.minimum.reduceat(values, starts)
        statistics[2, filled] = np.maximum.reduceat(values, starts)
    extras = [flat_float(event.extra) for event in events if event.extra is not None]
    extra_values = read_flat(extras).tolist()
    resolved, first, extra_first = [], 0, 0
    for event in events:
        count = len(event.rows)
        scalars = dict(zip(range_names(event.names), statistics[:, first : first + count].ravel().tolist()))
        first += count
        if event.extra is not None:
            scalars.update(zip(event.extra_names, extra_values[extra_first : extra_first + len(event.extra_names)]))
            extra_first += len(event.extra_names)
        resolved.append(scalars)
    return resolved


@functools.lru_cache(maxsize=64)
def range_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """``f"{name}_{kind}" for kind in ("mean", "min", "max") for name in names`` (the order ``batch_ranges`` fills)."""
    return tuple(f"{name}_{kind}" for kind in RANGE_KINDS for name in names)


def read_flat(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """1-D float tensors concatenated into one float64 numpy array: one ``cat`` and one copy to the host (on the
    first tensor's device; a tensor elsewhere is moved there first)."""
    if not tensors:
        return np.empty(0)
    device = tensors[0].device
    flat = torch.cat([tensor if tensor.device == device else tensor.to(device) for tensor in tensors])
    return flat.cpu().numpy().astype(np.float64)


def as_floats(scalars: Scalars) -> dict[str, float]:
    """``{name: float}`` from any form of an event's scalars (one host sync for a deferred one)."""
    return resolve([scalars])[0]
