"""Two real 2-epoch digits runs through the command line, shared by the per-sample statistics, the
temperature monitor and the notebook tests: each is made once per session, whichever test asks first.

- ``tals_run``: the default config (TALS policy), full epochs, ``every_n_steps=5``;
- ``ctkd_run``: the same with ``CurriculumTemperature`` (a policy with its own monitored state).

Fixtures are imported into the test modules that use them; the runs are cached here by name, so
importing the fixtures into several modules does not repeat a run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from tests.conftest import run_cli

EVERY_N_STEPS = 5
BATCH_SIZE = 64  # configs/data/digits.yaml
FULL_EPOCHS = ["--trainer.limit_train_batches=1.0", f"--per_sample_statistics.every_n_steps={EVERY_N_STEPS}"]
POLICIES = {"tals": "SigmaAnchoredTemperature", "ctkd": "CurriculumTemperature"}

_RUNS: dict[str, Path] = {}


def made_run(tmp_path_factory, name: str) -> Path:
    """The run folder (``trainer.log_dir``) of the named run, made on first use."""
    if name not in _RUNS:
        root = tmp_path_factory.mktemp(f"run-{name}")
        os.environ.pop("DISTILL_RUN_ID", None)  # a fresh run id (sessions fixtures outlive monkeypatch)
        try:
            cli = run_cli(
                root,
                *FULL_EPOCHS,
                f"--model.temperature_policy={POLICIES[name]}",
                f"--trainer.logger.init_args.name={name}",
            )
        finally:
            os.environ.pop("DISTILL_RUN_ID", None)
        _RUNS[name] = Path(cli.trainer.log_dir)
    return _RUNS[name]


def steps_per_epoch(train_size: int, batch_size: int = BATCH_SIZE) -> int:
    return math.ceil(train_size / batch_size)


@pytest.fixture(scope="session")
def tals_run(tmp_path_factory) -> Path:
    return made_run(tmp_path_factory, "tals")


@pytest.fixture(scope="session")
def ctkd_run(tmp_path_factory) -> Path:
    return made_run(tmp_path_factory, "ctkd")


def events(run_dir: Path):
    """Every event of the run folder, every histogram and scalar kept (the default keeps one histogram)."""
    from tensorboard.backend.event_processing.event_accumulator import (
        HISTOGRAMS, SCALARS, TENSORS, EventAccumulator,
    )  # fmt: skip

    return EventAccumulator(str(run_dir), size_guidance={HISTOGRAMS: 0, SCALARS: 0, TENSORS: 0}).Reload()
