"""The `distill` command end to end: a short real run, its files, the config, errors, fresh folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from distill.run_metrics import TEST_KEYS, VALIDATION_KEYS, read_run_metrics
from tests.conftest import DEFAULT_CONFIG, REPO, config_args, run_cli

DISTILL = Path(sys.executable).with_name("distill")


def _scalars(log_dir: str, tag: str) -> list[float]:
    events = EventAccumulator(log_dir, size_guidance={SCALARS: 0})
    events.Reload()
    return [event.value for event in events.Scalars(tag)]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One 3-epoch run of the default experiment (8 batches per epoch), shared by the tests below."""
    tmp_path = tmp_path_factory.mktemp("cli")
    cli = run_cli(tmp_path, "--trainer.max_epochs=3", "--trainer.limit_train_batches=8")
    return cli, Path(cli.trainer.log_dir)


def test_short_run_trains_and_writes_its_files(short_run):
    cli, log_dir = short_run
    losses = _scalars(str(log_dir), "train/loss")
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, f"training loss did not fall: {losses}"
    assert (log_dir / "config.yaml").is_file()
    assert list(log_dir.glob("events.out.tfevents.*"))
    last = log_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["state_dict"] and not any(k.startswith("teacher.") for k in checkpoint["state_dict"])
    assert not cli.model.teacher.training


def test_tensorboard_writer_queue_holds_a_hand_off(short_run):
    """configs/base.yaml and the CLI's own default logger give TensorBoard's writer a queue of WRITER_QUEUE events
    (not its default 10), and the saved config keeps it."""
    from distill.cli import cli_main
    from distill.pending_scalars import WRITER_QUEUE

    cli, log_dir = short_run
    assert cli.trainer.logger.experiment.max_queue == WRITER_QUEUE
    config = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert config["trainer"]["logger"]["init_args"]["max_queue"] == WRITER_QUEUE
    bare = cli_main(["--trainer.max_epochs=1"], run=False)  # no config layer: the CLI's own default
    assert bare.trainer.logger._kwargs["max_queue"] == WRITER_QUEUE


def test_saved_config_resolves_every_hyperparameter(short_run):
    _, log_dir = short_run
    config = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert config["seed_everything"] == 0
    assert config["model"]["temperature_policy"]["class_path"] == "distill.policies.SigmaAnchoredTemperature"
    assert config["model"]["optimizer"]["init_args"]["lr"] == 0.1
    assert config["model"]["lr_scheduler"]["init_args"]["milestones"] == [20, 25]
    assert config["data"]["init_args"]["batch_size"] == 64
    # num_classes and input_shape are linked from the data module into the model.
    hparams = yaml.safe_load((log_dir / "hparams.yaml").read_text())
    assert hparams["num_classes"] == 10


def test_metrics_json_holds_the_runs_own_final_metrics(short_run):
    cli, log_dir = short_run
    record = read_run_metrics(log_dir)
    assert (record["epochs"], record["steps"], record["seed"]) == (3, 24, 0)
    assert record["config"] == [str(layer) for layer in DEFAULT_CONFIG] and record["fit_seconds"] > 0
    for key in TEST_KEYS:  # the post-fit test, as logged
        assert record["metrics"][key] == pytest.approx(float(cli.trainer.callback_metrics[key]))
    for key in VALIDATION_KEYS:  # the last epoch's validation, as written to TensorBoard
        assert record["metrics"][key] == pytest.approx(_scalars(str(log_dir), key)[-1])
    assert [path.name for path in log_dir.glob("*metrics.json*")] == ["metrics.json"]  # no temporary file left


def test_a_fixed_folder_takes_a_resume_from_its_own_checkpoint_only(tmp_path):
    budget = ("--trainer.logger.init_args.version=fixed", "--test_after_fit=false")
    log_dir = Path(run_cli(tmp_path, "--trainer.max_epochs=1", *budget).trainer.log_dir)
    last = log_dir / "checkpoints" / "last.ckpt"
    elsewhere = tmp_path / "elsewhere.ckpt"
    elsewhere.write_bytes(last.read_bytes())
    for refused in ([], [f"--ckpt_path={elsewhere}"]):  # another run into this folder: config.yaml is kept
        with pytest.raises(RuntimeError, match="config.yaml to NOT exist"):
            run_cli(tmp_path, "--trainer.max_epochs=2", *budget, *refused)
    resumed = run_cli(tmp_path, "--trainer.max_epochs=2", f"--ckpt_path={last}", *budget)
    assert resumed.trainer.log_dir == str(log_dir) and resumed.trainer.current_epoch == 2
    assert yaml.safe_load((log_dir / "config.previous-1.yaml").read_text())["trainer"]["max_epochs"] == 1
    assert yaml.safe_load((log_dir / "config.yaml").read_text())["trainer"]["max_epochs"] == 2
    assert read_run_metrics(log_dir)["epochs"] == 2


@pytest.mark.ddp
@pytest.mark.timeout(180)
def test_fit_and_its_test_under_fork_ddp_write_metrics_json(tmp_path):
    """The post-fit test used to refuse the config.yaml that the fit's fork workers had saved."""
    ddp = ("--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp_fork")
    cli = run_cli(tmp_path, "--trainer.max_epochs=1", *ddp)
    record = read_run_metrics(cli.trainer.log_dir)
    assert {"val/acc1", "test/acc1", "test/teacher_acc1"} <= set(record["metrics"])
    assert record["epochs"] is None  # the workers report only their metrics back


def test_summary_names_accuracies_folder_and_tensorboard(tmp_path, capsys):
    cli = run_cli(tmp_path, "--trainer.max_epochs=1")
    out = capsys.readouterr().out
    assert "teacher test top-1:" in out and "student test top-1:" in out
    assert f"run folder:         {cli.trainer.log_dir}" in out
    assert f"tensorboard --logdir {Path(cli.trainer.log_dir).parent}" in out
    assert 0.9 < float(cli.trainer.callback_metrics["test/teacher_acc1"]) <= 1.0


def test_runs_never_share_a_folder(tmp_path):
    first = run_cli(tmp_path, "--trainer.max_epochs=1", "--test_after_fit=false").trainer.log_dir
    second = run_cli(tmp_path, "--trainer.max_epochs=1", "--test_after_fit=false").trainer.log_dir
    assert first != second and Path(first).parent == Path(second).parent
    assert (Path(first) / "config.yaml").is_file() and (Path(second) / "config.yaml").is_file()


def test_cross_entropy_baseline_through_the_same_path(tmp_path):
    cli = run_cli(tmp_path, "--model.teacher=null", "--trainer.max_epochs=1")
    assert cli.model.teacher is None
    assert "test/teacher_acc1" not in cli.trainer.callback_metrics and "test/acc1" in cli.trainer.callback_metrics


def test_print_config_lists_every_hyperparameter():
    result = subprocess.run(
        [str(DISTILL), "fit", *config_args(DEFAULT_CONFIG), "--print_config"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=True,
    )  # fmt: skip
    config = yaml.safe_load(result.stdout)
    model = config["model"]
    assert {"student", "teacher", "temperature_policy", "divergence", "optimizer", "lr_scheduler"} <= set(model)
    assert model["optimizer"]["init_args"]["momentum"] == 0.9
    assert config["trainer"]["max_epochs"] == 30 and "logger" in config["trainer"]
    assert config["data"]["class_path"] == "distill.data.DigitsDataModule"
    assert {"batch_size", "val_fraction", "test_fraction", "split_seed"} <= set(config["data"]["init_args"])


def test_bad_teacher_stops_with_one_clear_line(tmp_path):
    missing = tmp_path / "missing_teacher.pt"
    result = subprocess.run(
        [str(DISTILL), "fit", *config_args(DEFAULT_CONFIG), f"--model.teacher={missing}",
         f"--trainer.logger.init_args.save_dir={tmp_path}"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # the whole of stderr: no log lines, no traceback
    assert lines[-1].startswith("distill: error: teacher checkpoint") and str(missing) in lines[-1]


def test_last_checkpoint_is_the_last_epoch(short_run):
    _, log_dir = short_run
    checkpoint = torch.load(log_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (2, 24)


def test_resume_continues_exactly(tmp_path):
    """2 epochs + resume for a 3rd equals 3 epochs straight, bit for bit (weights, shuffles, LR)."""
    budget = ("--trainer.limit_train_batches=6", "--test_after_fit=false")
    straight = run_cli(tmp_path / "straight", "--trainer.max_epochs=3", *budget)
    first = run_cli(tmp_path / "resumed", "--trainer.max_epochs=2", *budget)
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    resumed = run_cli(tmp_path / "resumed", "--trainer.max_epochs=3", f"--ckpt_path={last}", *budget)
    assert resumed.trainer.global_step == straight.trainer.global_step == 18
    for name, value in straight.model.student.state_dict().items():
        assert torch.equal(resumed.model.student.state_dict()[name], value), name


def test_run_ids_are_fresh_per_cli_shared_by_ddp_children_and_by_srun_tasks(monkeypatch):
    from distill.cli import RUN_ID_VARIABLE, new_run_id

    first, second = new_run_id(), new_run_id()
    assert first != second
    monkeypatch.setenv("LOCAL_RANK", "1")  # a rank Lightning launched as a child process
    assert new_run_id() == second
    monkeypatch.delenv(RUN_ID_VARIABLE)
    for variable, value in {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "8", "SLURM_RESTART_COUNT": "1"}.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert new_run_id() == "slurm4242.0-r1"
