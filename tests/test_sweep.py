"""``distill-sweep``: a GridTemperature config becomes one FixedTemperature ``distill fit`` run per value."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from distill import sweep
from tests.conftest import REPO

GRID_CONFIG = REPO / "configs" / "methods" / "grid.yaml"
# Passed after `--` to every run of the real sweep: one tiny epoch, outputs under tmp_path.
TINY_RUN = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def config_paths(command: list[str]) -> list[Path]:
    return [Path(argument.split("=", 1)[1]) for argument in command if argument.startswith("--config=")]


def test_dry_run_prints_one_command_per_value_and_writes_the_overrides(tmp_path, capsys):
    assert sweep.main(["--config", str(GRID_CONFIG), "--sweep_dir", str(tmp_path), "--dry_run", "--", "--x=1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("grid-")
    assert (folder / "commands.txt").read_text().splitlines() == lines  # `sed -n ${SLURM_ARRAY_TASK_ID}p`
    for line, value in zip(lines, (1.0, 2.0, 4.0, 8.0)):
        command = shlex.split(line)
        assert command[command.index("fit") :][-1] == "--x=1"
        base, override = config_paths(command)
        assert base == GRID_CONFIG
        assert override == folder / f"T{value}.yaml"
        settings = yaml.safe_load(override.read_text())
        policy = settings["model"]["temperature_policy"]
        assert policy["class_path"] == "distill.policies.FixedTemperature"
        assert policy["init_args"] == {"T": value, "ce_weight": 0.1, "kd_weight": 0.9, "standardize": False}
        assert settings["trainer"]["logger"]["init_args"]["name"] == f"grid/T{value}"


def test_each_sweep_gets_a_new_folder(tmp_path, capsys):
    for _ in range(2):
        sweep.main(["--config", str(GRID_CONFIG), "--sweep_dir", str(tmp_path), "--dry_run"])
    assert len(list(tmp_path.iterdir())) == 2
    assert len(set(capsys.readouterr().out.splitlines())) == 8


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("missing.yaml", "config file not found: "),
        (str(REPO / "configs" / "methods" / "kd.yaml"), "not a GridTemperature"),
    ],
)
def test_errors_are_one_line_and_exit_2(tmp_path, capsys, config, message):
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["--config", config, "--sweep_dir", str(tmp_path), "--dry_run"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("distill-sweep: error: ") and message in error
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_sweep_runs_one_fixed_temperature_run_per_value(tmp_path):
    # One file holding the digits experiment's layers (base, data, pair) and a 2-value grid.
    settings = {}
    for layer in ("base.yaml", "data/digits.yaml", "pairs/digits_cnn-mlp_small.yaml", "methods/grid.yaml"):
        for key, value in yaml.safe_load((REPO / "configs" / layer).read_text()).items():
            settings[key] = {**settings.get(key, {}), **value} if isinstance(value, dict) else value
    settings["model"]["temperature_policy"]["init_args"]["values"] = [2.0, 8.0]
    settings["trainer"]["logger"]["init_args"]["name"] = "grid"
    config = tmp_path / "grid2.yaml"
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    save_dir = tmp_path / "runs"
    extra = [*TINY_RUN, f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={save_dir}"]
    assert sweep.main(["--config", str(config), "--sweep_dir", str(tmp_path / "sweeps"), "--", *extra]) == 0
    assert sorted(path.name for path in (save_dir / "grid").iterdir()) == ["T2.0", "T8.0"]
    for value in (2.0, 8.0):
        (run,) = (save_dir / "grid" / f"T{value}").iterdir()
        saved = yaml.safe_load((run / "config.yaml").read_text())
        policy = saved["model"]["temperature_policy"]
        assert policy["class_path"] == "distill.policies.FixedTemperature"
        assert policy["init_args"]["T"] == value
        assert (run / "checkpoints" / "last.ckpt").is_file()
