"""Where a run writes, and which folder a resumed run continues in.

- One output root: a logger's relative ``save_dir`` (``runs`` in configs/base.yaml) is taken relative to
  ``trainer.default_root_dir``, so ``--trainer.default_root_dir=/scratch/x`` moves everything a run writes
  (``/scratch/x/runs/<name>/<run id>/``: config, events, per-sample records, checkpoints).
- A run folder is ``<save_dir>/<name>/<version>``; its checkpoints are ``<run folder>/checkpoints/*.ckpt``.
- Resuming from a checkpoint inside a run folder continues in that folder (same version, so its TensorBoard
  curves continue); ``--ckpt_path=last`` is the newest checkpoint of the run's name (of its version when
  the version is given), by training step, then by modification time, among the folders whose recorded
  ``seed_everything`` is this run's seed (two seeds of the same layers share a name; one never resumes the other).
- The previous ``config.yaml`` of a folder that a run continues in is kept as ``config.previous-<n>.yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
import yaml
from lightning.pytorch.cli import SaveConfigCallback

CHECKPOINT_FOLDER = "checkpoints"
CHECKPOINT_SUFFIX = ".ckpt"
# A folder is a run folder when it holds one of these (written by the CLI and the TensorBoard logger).
RUN_MARKERS = ("config.yaml", "hparams.yaml")


def under_root(save_dir: str | os.PathLike, default_root_dir: str | os.PathLike | None) -> str:
    """``save_dir`` itself when absolute or when there is no root, else ``<default_root_dir>/<save_dir>``."""
    if default_root_dir is None or Path(save_dir).is_absolute():
        return str(save_dir)
    return str(Path(default_root_dir) / save_dir)


def run_folder_of(checkpoint: str | os.PathLike) -> Path | None:
    """The run folder holding ``checkpoint`` (``<run>/checkpoints/<file>.ckpt``), or ``None`` for a checkpoint that
    lies anywhere else."""
    path = Path(checkpoint).resolve()
    run = path.parent.parent
    if path.parent.name != CHECKPOINT_FOLDER or not any((run / marker).is_file() for marker in RUN_MARKERS):
        return None
    return run


def checkpoint_step(path: Path) -> int | None:
    """The ``global_step`` stored in a checkpoint, or ``None`` if the file does not load (a partial or foreign file).

    The file is memory-mapped: only its small pickled index is read, not the tensors.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(checkpoint["global_step"])
    except Exception:  # noqa: BLE001 - any unreadable file is simply not a candidate
        return None


def newest_checkpoint(run_folders: Iterable[Path]) -> Path | None:
    """The newest readable ``*.ckpt`` in the ``checkpoints/`` folders of ``run_folders``: the highest training step,
    ties (``last.ckpt`` and the checkpoint it copies) broken by modification time. Temporary files of a save that
    was killed (``.<name>.*.tmp``) never match."""
    candidates = []
    for folder in run_folders:
        for path in (Path(folder) / CHECKPOINT_FOLDER).glob(f"*{CHECKPOINT_SUFFIX}"):
            step = checkpoint_step(path) if path.is_file() else None
            if step is not None:
                candidates.append((step, path.stat().st_mtime_ns, path))
    return max(candidates)[2] if candidates else None


def run_folders(save_dir: str | os.PathLike, name: str, version: str | None) -> list[Path]:
    """The run folders of ``name`` under ``save_dir`` (only ``version``'s when it is given)."""
    root = Path(save_dir) / name
    if version is not None:
        return [root / version]
    return [path for path in root.glob("*") if path.is_dir()] if root.is_dir() else []


def recorded_seed(run_folder: Path) -> int | None:
    """The ``seed_everything`` of the run's ``config.yaml`` (an int), or ``None`` where none is readable."""
    try:
        seed = yaml.safe_load((Path(run_folder) / "config.yaml").read_text()).get("seed_everything")
    except (OSError, AttributeError, yaml.YAMLError):
        return None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def same_seed(folders: list[Path], seed) -> tuple[list[Path], list[Path]]:
    """``folders`` split into those whose recorded seed is ``seed`` (or unknown) and those of another seed. A ``seed``
    that is not an int (``seed_everything: true`` draws one at random) matches every folder."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        return folders, []
    kept, other = [], []
    for folder in folders:
        (other if recorded_seed(folder) not in (None, seed) else kept).append(folder)
    return kept, other


def keep_previous_config(run_dir: str | os.PathLike, filename: str = "config.yaml") -> Path | None:
    """Rename ``<run_dir>/<filename>`` to ``config.previous-<n>.yaml`` (the first free n); the path it got, if any."""
    saved = Path(run_dir) / filename
    if not saved.is_file():
        return None
    number = 1
    while (kept := saved.with_name(f"{saved.stem}.previous-{number}{saved.suffix}")).exists():
        number += 1
    saved.rename(kept)
    return kept


class SaveConfigKeepingPrevious(SaveConfigCallback):
    """Lightning's ``config.yaml`` writer, which refuses to overwrite another run's config, except in a run
    resumed into its own folder: there the previous ``config.yaml`` is kept as ``config.previous-<n>.yaml``."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        checkpoint = self.config.get("ckpt_path")
        run_dir = trainer.log_dir if checkpoint and not self.already_saved else None  # a broadcast: every rank asks
        if run_dir and trainer.is_global_zero and run_folder_of(checkpoint) == Path(run_dir).resolve():
            keep_previous_config(run_dir, self.config_filename)
        super().setup(trainer, pl_module, stage)


def _logger_arguments(config) -> list:
    """The ``init_args`` of every logger in a parsed config that has a ``save_dir`` (TensorBoard, CSV)."""
    loggers = config.get("trainer.logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    found = []
    for logger in loggers:
        init_args = getattr(logger, "init_args", None)
        if init_args is not None and init_args.get("save_dir") is not None:
            found.append(init_args)
    return found


def place_run(config, fit: bool) -> str | None:
    """Settle where the run writes, in a parsed config (before anything is built); returns a notice for the user.

    Loggers' relative ``save_dir`` go under ``trainer.default_root_dir``. For ``fit``: ``ckpt_path: last`` becomes
    the newest checkpoint of the run's name (of its version when one is given), or nothing (a new run, with a
    notice) where the run has none yet, so that a requeued job and a first submission share one command; a
    ``ckpt_path`` inside a run folder makes the loggers continue in that folder. Call it after the loggers' names
    are filled in and before versions are.
    """
    root = config.get("trainer.default_root_dir")
    loggers = _logger_arguments(config)
    for init_args in loggers:
        init_args["save_dir"] = under_root(init_args["save_dir"], root)
    if not fit or not loggers:
        return None
    main = loggers[0]
    notice = None
    if config.get("ckpt_path") == "last":
        name, version = main.get("name") or "", main.get("version")
        folders = run_folders(main["save_dir"], name, None if version is None else str(version))
        seed = config.get("seed_everything")
        folders, other_seeds = same_seed(folders, seed) if version is None else (folders, [])
        newest = newest_checkpoint(folders)
        config["ckpt_path"] = str(newest) if newest is not None else None
        if newest is None:
            where = Path(main["save_dir"]) / name / (str(version) if version is not None else "*")
            notice = f"distill: --ckpt_path=last: no checkpoint in {where}/checkpoints yet: starting a new run"
            if newest_checkpoint(other_seeds) is not None:
                notice = (f"distill: --ckpt_path=last: no checkpoint of seed {seed} in {where}/checkpoints (only runs "
                          "of other seeds): starting a new run")
    checkpoint = config.get("ckpt_path")
    run = run_folder_of(checkpoint) if checkpoint else None
    if run is not None:
        for init_args in loggers:
            if (Path(init_args["save_dir"]) / (init_args.get("name") or "")).resolve() != run.parent:
                init_args["save_dir"], init_args["name"] = str(run.parent), ""
            init_args["version"] = run.name
    return notice
