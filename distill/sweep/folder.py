"""The layout of a sweep folder, and its ``sweep.yaml`` (what the sweep is; read by ``--resume`` and the report).

    <sweep folder>/
      sweep.yaml                 the definition (config layers and their sha256, --set lists, seeds,
                                 extra arguments, working directory) and the list of points
      commands.txt               point i's `distill fit` command on line i (= SLURM array task i)
      sweep.sbatch, slurm/       with --launcher slurm: the array script and the tasks' output
      <label>/seed<k>/           point (label, seed k): an ordinary run folder (config.yaml,
                                 TensorBoard events, checkpoints/, per_sample/, metrics.json)
      <label>/seed<k>.yaml       its override config (seed, run folder, grid temperature)
      <label>/seed<k>.log        its output when it ran beside others (--jobs > 1, SLURM)
      <label>/seed<k>.lock       held while it runs, so that no two processes run one point
      results.csv, results.md, results.png    distill-report
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from distill.atomic_file import write_atomically
from distill.errors import DistillError

SWEEP_FILE = "sweep.yaml"
SWEEP_FORMAT = "distill-sweep/1"
COMMANDS_FILE = "commands.txt"


def run_dir(sweep_dir: str | os.PathLike, label: str, seed: int) -> Path:
    """The run folder of point ``(label, seed)``."""
    return Path(sweep_dir) / label / f"seed{seed}"


def point_file(sweep_dir: str | os.PathLike, label: str, seed: int, suffix: str) -> Path:
    """A file beside the point's run folder: ``.yaml`` (override), ``.log`` (output), ``.lock``."""
    return Path(sweep_dir) / label / f"seed{seed}{suffix}"


def read_sweep_file(sweep_dir: str | os.PathLike) -> dict:
    """The ``sweep.yaml`` of ``sweep_dir`` as a dict.

    Raises:
        DistillError: no such file (not a sweep folder) or not a ``distill-sweep/1`` file.
    """
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        raise DistillError(
            f"{sweep_dir} is not a sweep folder (no {SWEEP_FILE}): give the folder distill-sweep printed, "
            "e.g. sweeps/<name>"
        )
    try:
        record = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise DistillError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(record, dict) or record.get("format") != SWEEP_FORMAT:
        raise DistillError(f"{path} is not a {SWEEP_FORMAT} file (written by another version of distill-sweep?)")
    return record


def write_sweep_file(sweep_dir: str | os.PathLike, record: dict) -> Path:
    """Write ``sweep.yaml`` atomically (concurrent SLURM tasks may read it)."""
    text = "# distill-sweep: what this sweep is. `distill-sweep --resume <this folder>` continues it.\n"
    return write_atomically(Path(sweep_dir) / SWEEP_FILE, text + yaml.safe_dump(record, sort_keys=False))
