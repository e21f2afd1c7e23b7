"""Shared fixtures: real digits batches, the shipped teacher, and in-process CLI runs on tiny budgets."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from distill.data import DigitsDataModule
from distill.layers import config_args, experiment_layers  # noqa: F401  (config_args: for the test modules)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
# The default experiment (`make train`): base, digits, the digits pair, TALS.
DEFAULT_CONFIG = experiment_layers("tals")
# experiment(method, data="digits", pair=...): the layers of `make train DATA= PAIR= METHOD=`.
experiment = experiment_layers

# A short run: few steps, no sanity check, progress bar off, everything under tmp_path.
SHORT_RUN = [
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=4",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
]


@pytest.fixture(autouse=True)
def _quiet_and_isolated(monkeypatch):
    """Every test gets its own run id and no leaked distributed environment."""
    for variable in ("DISTILL_RUN_ID", "MASTER_PORT", "MASTER_ADDR", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "RANK"):
        monkeypatch.delenv(variable, raising=False)
    warnings.filterwarnings("ignore", message=r".*Found \d+ module\(s\) in eval mode.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # At most 2 torch threads, the cores shared out among pytest-xdist's workers (`make test` runs 2): on 2 cores,
    # 1 thread a worker took 573 s, 2 took 645 s. Child processes take the same count (tests/interrupted_runs.py).
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // workers)))
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="session")
def digits() -> DigitsDataModule:
    data = DigitsDataModule(batch_size=64)
    data.setup("fit")
    return data


@pytest.fixture(scope="session")
def digits_batch(digits):
    """One real training batch ``(images [64,1,8,8], labels [64], index [64])``."""
    return next(iter(digits.train_dataloader()))


def run_cli(tmp_path: Path, *args: str, config: Path | list[Path] = DEFAULT_CONFIG, subcommand: str = "fit"):
    """Run ``distill <subcommand> --config <layer>... <short run> <args>`` in-process under ``tmp_path``.

    Returns the ``DistillCLI`` (``.trainer``, ``.model``, ``.trainer.log_dir``).
    """
    from distill.cli import cli_main

    argv = [
        subcommand,
        *config_args(config),
        *SHORT_RUN,
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        *args,
    ]
    return cli_main(argv)
