"""Real ``distill fit`` processes to interrupt (SIGTERM, SIGUSR1, SIGKILL) and the pieces the tests put into them.

``start_fit`` runs the ``distill`` entry point in a child Python process (``python -c``), optionally after a
small patch (e.g. a slow checkpoint writer), so that the parent can signal it at a known point: the child's
``ProgressMarker`` callback writes the global step after every training batch to a file the parent polls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.conftest import REPO, SHORT_RUN, config_args, run_cli


class ProgressMarker(L.Callback):
    """After every training batch, write ``<process id> <global step>`` to ``path`` and sleep ``seconds`` (a slowed
    step, so that a signal sent by the test lands while training runs)."""

    def __init__(self, path: str, seconds: float = 0.0):
        self.path = Path(path)
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.path.write_text(f"{os.getpid()} {trainer.global_step}")
        time.sleep(self.seconds)


def fit_arguments(tmp_path: Path, config: list[Path], *args: str) -> list[str]:
    """``fit`` with the config layers, the tests' short-run settings and everything under ``tmp_path``."""
    return ["fit", *config_args(config), *SHORT_RUN, f"--trainer.default_root_dir={tmp_path}", *args]


def same_threads() -> dict[str, str]:
    """The environment that gives a child process this process's torch thread count: the runs these tests compare
    bit for bit must reduce floats in the same order, and a child otherwise takes one thread a core (1 thread here and
    2 in the child failed 3 resume tests on a 2-core machine)."""
    return {"OMP_NUM_THREADS": str(torch.get_num_threads())}


def start_fit(arguments: list[str], patch: str = "", environment: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``distill <arguments>`` (this worktree's code) in a child process, after running ``patch`` there, with
    this process's torch thread count (``same_threads``)."""
    program = f"import sys\n{patch}\nfrom distill.cli import main\nsys.argv = ['distill'] + sys.argv[1:]\nmain()\n"
    env = {**os.environ, "PYTHONPATH": str(REPO), **same_threads(), **(environment or {})}
    for variable in ("DISTILL_RUN_ID", "LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(variable, None)
    return subprocess.Popen(
        [sys.executable, "-c", program, *arguments],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 90.0) -> None:
    """Poll ``condition`` every 20 ms until it holds; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            status = process.returncode
            raise AssertionError(f"the run ended (status {status}) before the test could interrupt it:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the run to reach the point to interrupt")
        time.sleep(0.02)


def progress(marker: Path) -> tuple[int, int] | None:
    """``(process id, global step)`` from a ``ProgressMarker`` file, or ``None`` before the first batch."""
    try:
        pid, step = marker.read_text().split()
        return int(pid), int(step)
    except (FileNotFoundError, ValueError):
        return None


def reached_step(marker: Path, step: int) -> Callable[[], bool]:
    """True once the run's ``ProgressMarker`` file says ``step`` or more."""
    return lambda: (progress(marker) or (0, -1))[1] >= step


def marker_callback(marker: Path, seconds: float) -> str:
    """The ``--trainer.callbacks+=`` argument that adds a ``ProgressMarker``."""
    spec = {"class_path": f"{__name__}.ProgressMarker", "init_args": {"path": str(marker), "seconds": seconds}}
    return f"--trainer.callbacks+={json.dumps(spec)}"


def same_training_state(resumed: Path, straight: Path) -> None:
    """Two checkpoints hold the same student and policy weights (CTKD's theta), optimizer state, LR schedule and
    loop position, bit for bit."""
    first, second = (torch.load(path, map_location="cpu", weights_only=True) for path in (resumed, straight))
    assert (first["epoch"], first["global_step"]) == (second["epoch"], second["global_step"])
    assert first["state_dict"].keys() == second["state_dict"].keys()
    for name, value in second["state_dict"].items():
        assert torch.equal(first["state_dict"][name], value), name
    for one, other in zip(first["optimizer_states"], second["optimizer_states"], strict=True):
        assert one["param_groups"] == other["param_groups"]
        assert one["state"].keys() == other["state"].keys()
        for key, state in other["state"].items():
            for name, value in state.items():
                assert torch.equal(one["state"][key][name], value), (key, name)
    assert first["lr_schedulers"] == second["lr_schedulers"]


# The run every interrupted run is compared with: the default experiment (TALS, teacher-logit cache), 3 epochs of
# 4 steps (SHORT_RUN), no test; made once per session.
STRAIGHT = ["--trainer.max_epochs=3", "--test_after_fit=false"]


_STRAIGHT_RUN: list[Path] = []  # made once per session, whichever module asks first (a fixture imported into two
# modules is two fixtures to pytest)


@pytest.fixture
def straight_run(tmp_path_factory) -> Path:
    """last.ckpt of the run that never stopped (its folder also holds the per-sample records)."""
    if not _STRAIGHT_RUN:
        tmp_path = tmp_path_factory.mktemp("straight")
        _STRAIGHT_RUN.append(Path(run_cli(tmp_path, *STRAIGHT).trainer.log_dir) / "checkpoints" / "last.ckpt")
    return _STRAIGHT_RUN[0]
