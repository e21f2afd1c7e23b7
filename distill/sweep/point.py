"""One sweep point on disk: its override config, its ``distill fit`` command, and whether it finished.

A point's run is an ordinary ``distill fit`` run:

    distill fit --config=<layer> ... --config=<label>/seed<k>.yaml [--KEY=VALUE ...] [extra arguments]

where ``<label>/seed<k>.yaml`` sets ``seed_everything: k``, the run folder (``trainer.default_root_dir``
and the logger's ``save_dir``/``name``/``version``, so the run lands in ``<sweep>/<label>/seed<k>``)
and, for a grid point, the ``FixedTemperature``. Its state:

- finished: the run folder holds ``metrics.json`` (``distill fit`` writes it last): skipped;
- interrupted: checkpoints but no ``metrics.json``: rerun with ``--ckpt_path`` = the newest readable one of
  ``checkpoints/*.ckpt`` (``distill.run_folder.newest_checkpoint``), continuing in the same folder;
- new: anything else (a folder left without a checkpoint is cleared first).
"""

from __future__ import annotations

import shutil
import sys
from enum import Enum
from pathlib import Path

import yaml

from distill.run_folder import newest_checkpoint
from distill.run_metrics import read_run_metrics
from distill.sweep.definition import Point
from distill.sweep.folder import point_file, run_dir


class State(Enum):
    NEW = "new"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"


def point_state(folder: Path) -> tuple[State, Path | None]:
    """The state of the run in ``folder`` and, when interrupted, the checkpoint to resume from."""
    if read_run_metrics(folder) is not None:
        return State.FINISHED, None
    checkpoint = newest_checkpoint([folder])  # by training step; a truncated file never counts
    if checkpoint is None:
        return State.NEW, None
    return State.INTERRUPTED, checkpoint


def override_text(point: Point, sweep_dir: Path) -> str:
    """The YAML of the point's override config: its seed, its run folder, a grid point's temperature."""
    settings: dict = {"seed_everything": point.seed}
    if point.configuration.policy is not None:
        policy = {"class_path": "distill.policies.FixedTemperature", "init_args": point.configuration.policy}
        settings["model"] = {"temperature_policy": policy}
    settings["trainer"] = {
        "default_root_dir": str(run_dir(sweep_dir, point.label, point.seed)),
        "logger": {"init_args": {"save_dir": str(sweep_dir), "name": point.label, "version": f"seed{point.seed}"}},
    }
    header = f"# distill-sweep: point {point.index} ({point.name}) of the sweep in {sweep_dir}; a --config layer.\n"
    return header + yaml.safe_dump(settings, sort_keys=False)


def write_override(point: Point, sweep_dir: Path) -> Path:
    """Write the point's override config (unchanged content is not rewritten); return its path."""
    path = point_file(sweep_dir, point.label, point.seed, ".yaml")
    text = override_text(point, sweep_dir)
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def fit_command(point: Point, sweep_dir: Path, extra: list[str]) -> list[str]:
    """The point's ``distill fit`` command (a fresh start; a resume appends ``--ckpt_path``)."""
    configuration = point.configuration
    return [
        *distill_command(), "fit",
        *(f"--config={layer}" for layer in configuration.layers),
        f"--config={point_file(sweep_dir, point.label, point.seed, '.yaml')}",
        *configuration.arguments,
        *extra,
    ]  # fmt: skip


def clear_unresumable(folder: Path) -> bool:
    """Remove a run folder that holds no checkpoint and no metrics (an attempt that died before its first
    checkpoint: nothing to resume, and its config.yaml would stop a fresh run). True if removed."""
    if folder.is_dir() and point_state(folder)[0] is State.NEW:
        shutil.rmtree(folder)
        return True
    return False


def distill_command() -> list[str]:
    """The ``distill`` of this environment: plain ``distill`` where PATH finds that one, else its full path
    (so that printed commands work without an activated venv, e.g. in a SLURM job), else ``python -m``."""
    return _this_environments("distill", "distill.cli")


def sweep_command() -> list[str]:
    """The ``distill-sweep`` of this environment, found as ``distill_command`` finds ``distill``."""
    return _this_environments("distill-sweep", "distill.sweep")


def _this_environments(script_name: str, module: str) -> list[str]:
    script = Path(sys.executable).parent / script_name
    if not script.is_file():
        return [sys.executable, "-m", module]
    found = shutil.which(script_name)
    return [script_name] if found and Path(found).resolve() == script.resolve() else [str(script)]
