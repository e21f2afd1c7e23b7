"""``<run folder>/metrics.json``: a finished run's final metrics, its completion marker.

``distill fit`` writes it at the very end (after the post-fit test), on global rank 0, atomically,
and only when the fit ended normally (not interrupted, no SIGTERM). Its values are the run's own
logged metrics, read from ``trainer.callback_metrics``:

- ``val/acc1``, ``val/acc5``, ``val/loss``: the last validation of the fit (every epoch by default,
  so the final epoch's), captured before the test replaces ``callback_metrics``;
- ``test/acc1``, ``test/acc5``, ``test/loss``, ``test/teacher_acc1``: the post-fit test of the
  last-epoch student (absent with ``--test_after_fit=false``, or without a teacher for the last).

Accuracies are fractions in [0, 1]. ``distill-sweep`` treats a run folder holding this file as
finished, and ``distill-report`` reads its numbers from it and from nowhere else.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from distill.atomic_file import write_atomically
from distill.errors import DistillError

METRICS_FILE = "metrics.json"
METRICS_FORMAT = "distill-run-metrics/1"
VALIDATION_KEYS = ("val/acc1", "val/acc5", "val/loss")
TEST_KEYS = ("test/acc1", "test/acc5", "test/loss", "test/teacher_acc1")


def scalar_metrics(callback_metrics: Mapping, keys: Sequence[str]) -> dict[str, float]:
    """``{key: float}`` for the ``keys`` present in ``callback_metrics`` (0-dim tensors or numbers)."""
    return {key: float(callback_metrics[key]) for key in keys if key in callback_metrics}


def write_run_metrics(
    run_dir: str | os.PathLike,
    metrics: Mapping[str, float],
    epochs: int | None,
    steps: int | None,
    seed: int | None,
    fit_seconds: float,
    config_layers: Sequence[str],
) -> Path:
    """Write ``<run_dir>/metrics.json`` atomically (temp file, fsync, ``os.replace``); return its path.

    Args:
        run_dir: the run's folder (``trainer.log_dir``).
        metrics: ``{"val/acc1": ..., "test/acc1": ...}`` as floats (see the module docstring).
        epochs, steps: epochs and optimizer steps completed (``trainer.current_epoch``, ``global_step``);
            ``None`` where the fit ran in fork/spawn DDP workers, which report only their metrics back.
        seed: ``seed_everything`` of the run.
        fit_seconds: wall time of this ``fit`` call (for a resumed run, of the resumed part only).
        config_layers: the ``--config`` files of the run, in order.
    """
    record = {
        "format": METRICS_FORMAT,
        "metrics": {key: float(value) for key, value in metrics.items()},
        "epochs": None if epochs is None else int(epochs),
        "steps": None if steps is None else int(steps),
        "seed": seed,
        "fit_seconds": round(float(fit_seconds), 3),
        "config": [str(layer) for layer in config_layers],
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return write_atomically(Path(run_dir) / METRICS_FILE, json.dumps(record, indent=2) + "\n")


def read_run_metrics(run_dir: str | os.PathLike) -> dict | None:
    """The record ``write_run_metrics`` wrote in ``run_dir``, or ``None`` when the run has not finished.

    Raises:
        DistillError: the file exists but is not a ``metrics.json`` of this format.
    """
    path = Path(run_dir) / METRICS_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise DistillError(f"{path} is unreadable ({error}): delete it to rerun that run") from None
    if not isinstance(record, dict) or record.get("format") != METRICS_FORMAT:
        raise DistillError(f"{path} is not a {METRICS_FORMAT} file: delete it to rerun that run")
    return record
