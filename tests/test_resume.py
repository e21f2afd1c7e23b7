"""Resuming: ``--ckpt_path=last`` finds the newest checkpoint of the run's name, a resumed run continues in the run
folder its checkpoint came from (same version, its TensorBoard curves continued without a doubled stretch), and
everything a run writes goes under ``trainer.default_root_dir``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from callbacks import read_records
from distill.run_folder import newest_checkpoint, run_folder_of
from tests.conftest import DEFAULT_CONFIG, SHORT_RUN, config_args, experiment, run_cli
from tests.interrupted_runs import same_training_state


def fake_run(folder: Path, checkpoints: dict[str, int]) -> Path:
    """A run folder with real (tiny) checkpoint files: ``{file name: global_step}``."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("{}\n")
    for name, step in checkpoints.items():
        torch.save({"global_step": step, "state_dict": {"w": torch.zeros(2)}}, folder / "checkpoints" / name)
    return folder


def test_newest_checkpoint_by_step_then_time_skipping_partial_files(tmp_path):
    early = fake_run(tmp_path / "a", {"last.ckpt": 40, "best-epoch001.ckpt": 40})
    late = fake_run(tmp_path / "b", {"latest-step0000050.ckpt": 50, "last.ckpt": 48})
    os.utime(early / "checkpoints" / "last.ckpt", (2e9, 2e9))  # touched last, but fewer steps
    assert newest_checkpoint([early, late]) == late / "checkpoints" / "latest-step0000050.ckpt"
    # A save killed half-way: its temporary file, and a truncated .ckpt, are never taken.
    whole = (late / "checkpoints" / "latest-step0000050.ckpt").read_bytes()
    (late / "checkpoints" / ".last.ckpt.x1y2.tmp").write_bytes(whole)
    (late / "checkpoints" / "latest-step0000060.ckpt").write_bytes(whole[: len(whole) // 2])
    assert newest_checkpoint([early, late]) == late / "checkpoints" / "latest-step0000050.ckpt"
    # Equal steps: the newer file (last.ckpt written right after the checkpoint it copies).
    os.utime(early / "checkpoints" / "best-epoch001.ckpt", (1e9, 1e9))
    assert newest_checkpoint([early]) == early / "checkpoints" / "last.ckpt"
    assert newest_checkpoint([tmp_path / "nothing"]) is None
    assert run_folder_of(early / "checkpoints" / "last.ckpt") == early.resolve()
    shutil.copy(early / "checkpoints" / "last.ckpt", tmp_path / "loose.ckpt")
    assert run_folder_of(tmp_path / "loose.ckpt") is None


def scalar_steps(run: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run), size_guidance={SCALARS: 0})
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_resumed_runs_continue_in_their_folder_under_the_output_root(tmp_path, capsys, monkeypatch):
    from distill.cli import cli_main

    root = tmp_path / "scratch"
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory (restored after the test)

    def fit(*args: str):
        budget = ("--trainer.limit_train_batches=2", "--test_after_fit=false", "--per_sample_statistics=null")
        root_dir = f"--trainer.default_root_dir={root}"
        return cli_main(["fit", *config_args(DEFAULT_CONFIG), *SHORT_RUN, *budget, root_dir, *args])

    first = fit("--trainer.max_epochs=1", "--ckpt_path=last")  # nothing to resume yet: a new run, and a notice
    run = Path(first.trainer.log_dir)
    assert "--ckpt_path=last: no checkpoint in" in capsys.readouterr().err and "starting a new run" not in str(run)
    assert run.parent.parent.parent.parent == root / "runs" and run.parent.name == "tals"
    kept = run / "checkpoints" / "after-epoch0.ckpt"
    shutil.copy(run / "checkpoints" / "last.ckpt", kept)
    second = fit("--trainer.max_epochs=2", "--ckpt_path=last")  # continues: steps 2, 3
    assert Path(second.trainer.log_dir) == run and second.trainer.global_step == 4
    third = fit("--trainer.max_epochs=2", f"--ckpt_path={kept}")  # from step 2 again: steps 2, 3 once more
    assert Path(third.trainer.log_dir) == run
    assert sorted(path.name for path in run.glob("config*.yaml")) == [
        "config.previous-1.yaml", "config.previous-2.yaml", "config.yaml"
    ]  # fmt: skip
    # TensorBoard shows each step once: the third run's events replace the second's from its first step on.
    losses = scalar_steps(run, "train/loss")
    assert [step for step, _ in losses] == [0, 1, 2, 3]
    assert list(tmp_path.iterdir()) == [root]  # everything under the output root


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, arguments",
    [("kd", []), ("ctkd_global", []), ("tals", ["--model.teacher_cache=false"])],
    ids=["FixedTemperature", "CurriculumTemperature", "SigmaAnchoredTemperature without the cache"],
)
def test_a_run_resumed_from_a_mid_epoch_step_checkpoint_ends_bit_for_bit_as_one_that_never_stopped(
    tmp_path, method, arguments
):
    # 2 epochs of 4 steps, a step checkpoint every 3 steps: the newest, latest-step0000006.ckpt, is after the
    # second batch of epoch 1 (digits: the teacher-logit cache is on unless switched off). Per-sample windows every
    # 2 steps: the checkpoint holds epoch 1's rows from a window (already on the host) and from a step since.
    budget = ("--trainer.max_epochs=2", "--checkpoint_every_n_steps=3", "--test_after_fit=false",
              "--per_sample_statistics.every_n_steps=2", *arguments)  # fmt: skip
    straight = run_cli(tmp_path / "straight", *budget, config=experiment(method))
    checkpoints = Path(straight.trainer.log_dir) / "checkpoints"
    middle = shutil.copy(checkpoints / "latest-step0000006.ckpt", tmp_path / "middle.ckpt")
    progress = torch.load(middle, weights_only=True)["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert (progress["processed"], progress["completed"]) == (2, 1)  # saved in the end hook of batch 1 of epoch 1
    resumed = run_cli(tmp_path / "resumed", *budget, f"--ckpt_path={middle}", config=experiment(method))
    same_training_state(Path(resumed.trainer.log_dir) / "checkpoints" / "last.ckpt", checkpoints / "last.ckpt")
    # Epoch 1's record file is whole and the same: its rows from before the checkpoint came back from it.
    records = read_records(resumed.trainer.log_dir, epochs=[1])
    straight_records = read_records(straight.trainer.log_dir, epochs=[1])
    assert len(straight_records["index"]) == 4 * 64 and records.keys() == straight_records.keys()
    for column, values in straight_records.items():
        np.testing.assert_array_equal(records[column], values, err_msg=column)
    if method == "ctkd_global":  # the learned temperature moved, and identically
        assert float(resumed.model.temperature_policy.theta) != 1.0


def test_last_resumes_only_a_run_of_the_same_seed(tmp_path, capsys, monkeypatch):
    """Two seeds of the same layers share a run name; ``--ckpt_path=last`` of one never continues the other."""
    from distill.cli import cli_main

    monkeypatch.chdir(tmp_path)

    def fit(seed: int, epochs: int):
        budget = ("--trainer.limit_train_batches=2", "--test_after_fit=false", "--per_sample_statistics=null")
        return cli_main(["fit", *config_args(DEFAULT_CONFIG), *SHORT_RUN, *budget, f"--seed_everything={seed}",
                         f"--trainer.default_root_dir={tmp_path}", f"--trainer.max_epochs={epochs}", "--ckpt_path=last"])

    seed0 = Path(fit(0, 1).trainer.log_dir)
    capsys.readouterr()
    seed1 = fit(1, 1)  # seed 0's checkpoint is the only one under this name: not taken
    assert Path(seed1.trainer.log_dir) != seed0 and seed1.trainer.global_step == 2
    assert "no checkpoint of seed 1" in capsys.readouterr().err
    again = fit(0, 2)  # seed 0 continues its own folder, although seed 1's checkpoint is as new
    assert Path(again.trainer.log_dir) == seed0 and again.trainer.global_step == 4
