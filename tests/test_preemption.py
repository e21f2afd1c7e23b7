"""Preemption: SIGTERM and SLURM's SIGUSR1 save last.ckpt at the end of the current batch and exit cleanly (one line,
status 128 + signal, no traceback); SIGUSR1 under SLURM requeues the job, and the requeued job
(scripts/slurm_train.sbatch run again with the same job id) continues in the same run folder. Both resumed runs
end with the student, policy, optimizer and LR schedule of a run that never stopped, bit for bit.

Real processes: ``distill fit`` in a child process, slowed by ``ProgressMarker`` so that the signal lands mid-epoch;
the sbatch script runs under bash with stand-ins for ``srun`` (runs its arguments) and ``scontrol`` (records
them), the only parts of SLURM the script and the run use.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from callbacks import read_records
from distill.preemption import requeue_command, slurm_job_id
from tests.conftest import DEFAULT_CONFIG, REPO, SHORT_RUN, config_args, run_cli
from tests.interrupted_runs import (  # noqa: F401  (straight_run: a fixture)
    STRAIGHT, fit_arguments, marker_callback, progress, reached_step, same_threads, same_training_state, start_fit,
    straight_run, wait_until,
)  # fmt: skip

# The straight run's settings (3 epochs of 4 batches, TALS); interrupted in the middle of epoch 1.
EPOCHS = STRAIGHT
STOP_AFTER_STEP = 5


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigterm_saves_last_checkpoint_exits_cleanly_and_the_run_continues_exactly(tmp_path, straight_run):
    marker = tmp_path / "progress"
    process = start_fit(fit_arguments(tmp_path, DEFAULT_CONFIG, *EPOCHS, marker_callback(marker, 0.2)))
    wait_until(reached_step(marker, STOP_AFTER_STEP), process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    (run,) = (tmp_path / "runs").glob("*/*/*/*")
    last = run / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    stopped_at = saved["global_step"]
    assert STOP_AFTER_STEP <= stopped_at < 8, "not stopped in the middle of epoch 1"
    line = f"distill: stopped by SIGTERM at epoch 1, step {stopped_at}: checkpoint saved to {last}; continue with "
    assert err.strip().splitlines()[-1] == line + "--ckpt_path=last"

    resumed = run_cli(tmp_path, *EPOCHS, "--ckpt_path=last")
    assert Path(resumed.trainer.log_dir) == run and (run / "config.previous-1.yaml").is_file()
    same_training_state(last, straight_run)
    # The per-sample records of the interrupted epoch are whole: its rows from before the signal were in the checkpoint.
    records, straight_records = read_records(run), read_records(straight_run.parent.parent)
    assert records.keys() == straight_records.keys()
    for column, values in straight_records.items():
        np.testing.assert_array_equal(records[column], values, err_msg=column)


def test_requeue_command_names_the_job_or_array_task():
    assert slurm_job_id({"SLURM_JOB_ID": "4242"}) == "4242"
    assert slurm_job_id({"SLURM_JOB_ID": "4250", "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "7"}) == "4242_7"
    assert slurm_job_id({}) is None
    assert requeue_command("4242_7") == ["scontrol", "requeue", "4242_7"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_slurm_time_limit_requeues_and_the_job_continues_in_its_run_folder(tmp_path, straight_run):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "scontrol").write_text('#!/bin/sh\necho "$@" >> "$SCONTROL_LOG"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    marker = tmp_path / "progress"
    environment = {
        "PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(REPO), "SCONTROL_LOG": str(tmp_path / "scontrol.log"),
        "DISTILL": str(Path(os.sys.executable).with_name("distill")), "DISTILL_ACCELERATOR": "cpu",
        "DISTILL_STRATEGY": "auto", "DISTILL_PRECISION": "32-true",
        "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1",
        "SLURM_JOB_NAME": "distill", **same_threads(),
    }  # fmt: skip
    arguments = [*config_args(DEFAULT_CONFIG), *SHORT_RUN, *EPOCHS]

    def submit(restart: int, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            ["bash", str(REPO / "scripts" / "slurm_train.sbatch"), *arguments, *extra], cwd=tmp_path, text=True,
            env={**environment, "SLURM_RESTART_COUNT": str(restart)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    first = submit(0, marker_callback(marker, 0.2))
    wait_until(reached_step(marker, STOP_AFTER_STEP), first)
    os.kill(progress(marker)[0], signal.SIGUSR1)  # to the run (srun's task), as --signal=USR1@90 does
    _, err = first.communicate(timeout=60)
    assert first.returncode == 128 + signal.SIGUSR1, err[-3000:]
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    run = next((tmp_path / "runs").glob("*/*/*/slurm-4242"))
    assert "SLURM job 4242 requeued: it continues from this checkpoint in the same run folder" in err.splitlines()[-1]
    assert "Traceback" not in err

    second = submit(1)  # the requeued job: same id, same command
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-3000:]
    assert list((tmp_path / "runs").glob("*/*/*/*")) == [run]
    assert (run / "config.previous-1.yaml").is_file() and len(list(run.glob("events.out.tfevents.*"))) >= 2
    same_training_state(run / "checkpoints" / "last.ckpt", straight_run)
