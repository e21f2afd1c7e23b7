"""What every benchmark shares: interleaved repeats, paired ratios, clocks, memory and the setup record.

A benchmark compares variants *side by side in one process*: each repeat runs every variant once, in
a rotating order, so that load on a shared machine hits them alike; a variant's run returns the times
of its timed units (epochs or steps, warm-up dropped). The figure reported is the median over repeats
of ``median(variant units) / median(baseline units)`` within the same repeat; absolute times are given
next to it for orientation only. Nothing here asserts a time.

Clocks: process CPU time on the CPU (what a process costs, less sensitive to other processes than
wall time; one torch thread by default so idle OpenMP threads do not spin), wall time with CUDA
synchronisation on a GPU.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

# Budgets: "tiny" only exercises the code paths (the test suite), "quick" is the CPU default (minutes),
# "full" is for a GPU.
MODES = ("tiny", "quick", "full")


@dataclass
class Budget:
    """How much to time: repeats of every variant, and warm-up and timed units in each run."""

    repeats: int
    warmup: int
    timed: int


def budget(mode: str, quick: Budget, full: Budget | None = None) -> Budget:
    """The budget of ``mode``: ``tiny`` is 1 repeat of 1 + 1 units, ``full`` defaults to ``quick``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "tiny":
        return Budget(repeats=1, warmup=1, timed=1)
    return quick if mode == "quick" or full is None else full


def device() -> torch.device:
    """``cuda`` when a GPU is present, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Clock:
    """Process CPU time on the CPU; wall time after ``cuda.synchronize`` on a GPU."""

    def __init__(self, on: torch.device):
        self.cuda = on.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()

    @property
    def name(self) -> str:
        return "wall (CUDA synchronised)" if self.cuda else "process CPU"


def peak_memory_mb(on: torch.device) -> float:
    """Peak memory: CUDA's max allocated since the last reset on a GPU; the process's peak resident set
    size so far on the CPU (monotonic over the process: it only says how high the run got)."""
    if on.type == "cuda":
        return torch.cuda.max_memory_allocated(on) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_memory(on: torch.device) -> None:
    if on.type == "cuda":
        torch.cuda.reset_peak_memory_stats(on)


@dataclass
class Variant:
    """One side of a comparison: a callable that runs it once and returns its timed units' seconds."""

    name: str
    run: Callable[[], list[float]]


@dataclass
class Measurement:
    """Per variant, per repeat: the unit times (seconds) and the peak memory after the run (MB)."""

    units: dict[str, list[list[float]]] = field(default_factory=dict)
    memory_mb: dict[str, list[float]] = field(default_factory=dict)


def interleave(variants: Sequence[Variant], repeats: int, on: torch.device) -> Measurement:
    """Run every variant once per repeat, in an order rotated by one each repeat."""
    measurement = Measurement({v.name: [] for v in variants}, {v.name: [] for v in variants})
    for repeat in range(repeats):
        shift = repeat % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            reset_peak_memory(on)
            measurement.units[variant.name].append(variant.run())
            measurement.memory_mb[variant.name].append(peak_memory_mb(on))
    return measurement


def paired_ratio(measurement: Measurement, variant: str, baseline: str) -> float:
    """Median over repeats of ``median(variant) / median(baseline)`` within the same repeat."""
    pairs = zip(measurement.units[variant], measurement.units[baseline])
    return statistics.median(statistics.median(a) / statistics.median(b) for a, b in pairs)


def median_ms(measurement: Measurement, variant: str) -> float:
    """Median unit time of a variant over every repeat, in milliseconds."""
    return 1000 * statistics.median(t for run in measurement.units[variant] for t in run)


@dataclass
class Figure:
    """One reported number: a ratio (or a rate), its bound if the issue sets one, and its setup.

    Attributes:
        key: stable identifier, e.g. ``framework.digits_logging``.
        title: what is compared, in words.
        value: the figure (a ratio for comparisons).
        unit: ``x`` for ratios, else the unit of ``value``.
        bound: the largest acceptable value, or ``None`` when the figure is reported, not bounded.
        at_least: the smallest acceptable value (for speed-ups), or ``None``.
        variants: per variant its median time (ms) and peak memory (MB).
        setup: what was run: models, batch, threads, repeats, clock.
        note: how to read it.
    """

    key: str
    title: str
    value: float
    unit: str = "x"
    bound: float | None = None
    variants: dict[str, dict[str, float]] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    at_least: float | None = None

    @property
    def within_bound(self) -> bool | None:
        if self.bound is None and self.at_least is None:
            return None
        return (self.bound is None or self.value <= self.bound) and (self.at_least is None or self.value >= self.at_least)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "within_bound": self.within_bound}


def comparison(key: str, title: str, measurement: Measurement, variant: str, baseline: str, on: torch.device,
               bound: float | None = None, setup: dict | None = None, note: str = "") -> Figure:  # fmt: skip
    """A ratio figure of ``variant`` over ``baseline`` with both sides' times and memory."""
    variants = {
        name: {"median_ms": median_ms(measurement, name), "peak_memory_mb": max(measurement.memory_mb[name])}
        for name in (variant, baseline)
    }
    repeats = len(measurement.units[baseline])
    units = len(measurement.units[baseline][0])
    full_setup = {"repeats": repeats, "timed_units_per_run": units, "clock": Clock(on).name, **(setup or {})}
    return Figure(key, title, paired_ratio(measurement, variant, baseline), "x", bound, variants, full_setup, note)


def environment() -> dict[str, Any]:
    """Versions and machine: recorded with every benchmark run."""
    import lightning

    on = device()
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "device": torch.cuda.get_device_name(on) if on.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip
    return info
