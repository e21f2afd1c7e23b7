"""Atomic checkpoints: a ``distill fit`` killed (SIGKILL) in the middle of writing a checkpoint leaves the previous
newest checkpoint whole, the partial file is never taken for a checkpoint, and ``--ckpt_path=last`` resumes from
it to the same end as a run that never stopped."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from distill.checkpoint_io import AtomicCheckpointIO
from distill.errors import DistillError
from distill.run_folder import newest_checkpoint
from tests.conftest import DEFAULT_CONFIG, run_cli
from tests.interrupted_runs import (  # noqa: F401  (straight_run: a fixture)
    STRAIGHT, fit_arguments, same_training_state, start_fit, straight_run, wait_until,
)  # fmt: skip

# In the child: every checkpoint save after the first SLOW_AFTER writes its bytes slowly (the real atomic writer,
# with a pause between the chunks torch.save hands it) and says so in a marker file once it has started.
SLOW_SAVES = """
import contextlib, time
from pathlib import Path
import distill.checkpoint_io as checkpoint_io
from distill.atomic_file import open_atomically

MARKER, SLOW_AFTER = Path({marker!r}), {slow_after}
saves = 0

class SlowStream:
    def __init__(self, stream):
        self.stream = stream
    def write(self, data):
        MARKER.write_text("writing")
        time.sleep(0.05)
        return self.stream.write(data)
    def __getattr__(self, name):
        return getattr(self.stream, name)

@contextlib.contextmanager
def slow_open(path):
    global saves
    saves += 1
    with open_atomically(path) as stream:
        yield SlowStream(stream) if saves > SLOW_AFTER else stream

checkpoint_io.open_atomically = slow_open
"""


def test_round_trip_is_plain_weights(tmp_path):
    io = AtomicCheckpointIO()
    payload = {"state_dict": {"w": torch.arange(6.0)}, "global_step": 3}
    io.save_checkpoint(payload, tmp_path / "sub" / "a.ckpt")
    assert [path.name for path in (tmp_path / "sub").iterdir()] == ["a.ckpt"]  # no temporary file left
    loaded = io.load_checkpoint(tmp_path / "sub" / "a.ckpt")
    assert torch.equal(loaded["state_dict"]["w"], payload["state_dict"]["w"]) and loaded["global_step"] == 3
    with pytest.raises(DistillError, match="not found"):
        io.load_checkpoint(tmp_path / "missing.ckpt")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_kill_during_a_save_leaves_the_previous_checkpoint_whole(tmp_path, straight_run):
    marker = tmp_path / "saving"
    # The straight run's 3 epochs of 4 steps, a step checkpoint every 2 steps: saves 1-2 at step 2 (latest-step,
    # last.ckpt) are normal, save 3 (latest-step0000004.ckpt) is slow and killed in the middle.
    arguments = fit_arguments(tmp_path, DEFAULT_CONFIG, *STRAIGHT, "--checkpoint_every_n_steps=2")
    process = start_fit(arguments, SLOW_SAVES.format(marker=str(marker), slow_after=2))
    wait_until(marker.exists, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    (run,) = (tmp_path / "runs").glob("*/*/*/*")
    partial = [path.name for path in (run / "checkpoints").iterdir() if path.name.endswith(".tmp")]
    assert len(partial) == 1 and partial[0].startswith(".latest-step0000004.ckpt."), partial  # killed mid-write
    newest = newest_checkpoint([run])
    checkpoint = torch.load(newest, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2 and newest.name in ("last.ckpt", "latest-step0000002.ckpt")
    assert not (run / "checkpoints" / "latest-step0000004.ckpt").exists()

    # The command a requeued job runs: it continues from step 2 (mid-epoch 0), in the same folder, to the end, as if
    # it had never stopped.
    resumed = run_cli(tmp_path, *STRAIGHT, "--checkpoint_every_n_steps=2", "--ckpt_path=last")
    assert Path(resumed.trainer.log_dir) == run and resumed.trainer.global_step == 12
    same_training_state(run / "checkpoints" / "last.ckpt", straight_run)
