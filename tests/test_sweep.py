"""``distill-sweep``: config layers x ``--set`` lists x a grid's temperatures x seeds, as ordinary ``distill fit``
runs in one restartable sweep folder, locally or as a SLURM array."""

from __future__ import annotations

import csv
import fcntl
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from distill import sweep
from distill.cli import cli_main
from distill.errors import DistillError
from distill.report import build_report
from distill.report.statistics import compare
from distill.run_metrics import read_run_metrics, write_run_metrics
from distill.sweep.definition import parse_seeds, short_names, split_values
from distill.sweep.execute import child_environment
from distill.sweep.slurm import array_spec
from tests.conftest import CONFIGS, REPO

METHODS = CONFIGS / "methods"
GRID_CONFIG = METHODS / "grid.yaml"
# The digits experiment's layers below the method: every sweep here stacks a method on them.
DIGITS = [CONFIGS / "base.yaml", CONFIGS / "data" / "digits.yaml", CONFIGS / "pairs" / "digits_cnn-mlp_small.yaml"]


def layers(*methods: Path | str) -> list[str]:
    """``--config`` arguments: the digits layers, then ``methods``."""
    return [argument for layer in (*DIGITS, *methods) for argument in ("--config", str(layer))]
# Passed after `--` to every run of the real sweeps: one tiny epoch.
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


def plan(tmp_path: Path, *arguments: str, name: str = "s") -> tuple[Path, list[list[str]]]:
    """A dry run: the sweep folder and its printed commands."""
    assert sweep.main(["--sweep_dir", str(tmp_path), "--name", name, "--dry_run", *arguments]) == 0
    folder = tmp_path / name
    return folder, [shlex.split(line) for line in (folder / "commands.txt").read_text().splitlines()]


def grid_layer(tmp_path: Path, values: list[float]) -> Path:
    """A layer that only changes the grid's values (it sets init_args, not the class)."""
    layer = tmp_path / "grid_values.yaml"
    layer.write_text(yaml.safe_dump({"model": {"temperature_policy": {"init_args": {"values": values}}}}))
    return layer


def test_dry_run_writes_one_override_and_command_per_point_seed_by_seed(tmp_path, capsys):
    folder, commands = plan(tmp_path, *layers(GRID_CONFIG), "--seeds", "2", "--", "--x=1")
    assert capsys.readouterr().out.splitlines() == [shlex.join(command) for command in commands]
    labels = ["T=1.0", "T=2.0", "T=4.0", "T=8.0"]
    expected = [(label, seed) for seed in (0, 1) for label in labels]  # every first seed before any second
    assert len(commands) == len(expected)
    for command, (label, seed) in zip(commands, expected):
        assert command[command.index("fit") + 1 :][-1] == "--x=1"
        *bases, override = config_paths(command)
        assert (bases, override) == ([*DIGITS, GRID_CONFIG], folder / label / f"seed{seed}.yaml")
        settings = yaml.safe_load(override.read_text())
        assert settings["seed_everything"] == seed
        policy = settings["model"]["temperature_policy"]
        assert policy["class_path"] == "distill.policies.FixedTemperature"
        assert policy["init_args"] == {"T": float(label[2:]), "ce_weight": 0.1, "kd_weight": 0.9, "standardize": False}
        assert settings["trainer"]["default_root_dir"] == str(folder / label / f"seed{seed}")
        location = {"save_dir": str(folder), "name": label, "version": f"seed{seed}"}
        assert settings["trainer"]["logger"]["init_args"] == location
    record = yaml.safe_load((folder / "sweep.yaml").read_text())
    assert [(point["label"], point["seed"]) for point in record["points"]] == expected
    assert record["config_sha256"][str(GRID_CONFIG)]


def test_without_a_name_each_sweep_gets_a_new_folder(tmp_path, capsys):
    for _ in range(2):
        sweep.main([*layers(GRID_CONFIG), "--sweep_dir", str(tmp_path), "--dry_run"])
    folders = list(tmp_path.iterdir())
    assert len(folders) == 2 and all(folder.name.startswith("grid-") for folder in folders)
    assert len(set(capsys.readouterr().out.splitlines())) == 8


def test_set_lists_cross_each_other_and_pass_values_as_written(tmp_path):
    _, commands = plan(
        tmp_path, *layers(METHODS / "kd.yaml"),
        "--set", "model.temperature_policy.init_args.kd_weight=1,3", "--set", "model.optimizer.init_args.lr=0.1,1e-2",
    )  # fmt: skip
    arguments = [[argument for argument in command if argument.startswith("--model.")] for command in commands]
    assert arguments == [
        [f"--model.temperature_policy.init_args.kd_weight={kd}", f"--model.optimizer.init_args.lr={lr}"]
        for kd in ("1", "3") for lr in ("0.1", "1e-2")
    ]  # fmt: skip
    labels = [config_paths(command)[-1].parent.name for command in commands]
    assert labels == ["kd_weight=1,lr=0.1", "kd_weight=1,lr=1e-2", "kd_weight=3,lr=0.1", "kd_weight=3,lr=1e-2"]


def test_the_last_layer_that_sets_the_policy_decides_whether_there_is_a_grid(tmp_path):
    fixed = str(METHODS / "kd.yaml")
    _, commands = plan(tmp_path, *layers(GRID_CONFIG), "--config", fixed, name="fixed_last")
    assert [config_paths(command)[-1].parent.name for command in commands] == ["kd"]  # no grid: the run's name
    _, commands = plan(tmp_path, *layers(fixed), "--config", str(GRID_CONFIG), "--config",
                       str(grid_layer(tmp_path, [3.0, 5.0])), name="grid_last")  # fmt: skip
    assert [config_paths(command)[-1].parent.name for command in commands] == ["T=3.0", "T=5.0"]


def test_a_config_axis_sweeps_layers_and_expands_a_grid_among_them(tmp_path):
    folder, commands = plan(
        tmp_path, *layers(METHODS / "kd.yaml"),
        "--set", f"config={METHODS / 'tals.yaml'},{GRID_CONFIG}", "--seeds", "0,5",
    )  # fmt: skip
    labels = ["tals", "grid,T=1.0", "grid,T=2.0", "grid,T=4.0", "grid,T=8.0"]
    assert [config_paths(command)[-1].parent.name for command in commands] == labels * 2
    assert [path.name for path in config_paths(commands[1])][3:] == ["kd.yaml", "grid.yaml", "seed0.yaml"]
    assert [path.name for path in config_paths(commands[5])][3:] == ["kd.yaml", "tals.yaml", "seed5.yaml"]
    points = yaml.safe_load((folder / "sweep.yaml").read_text())["points"]
    assert [point["group"] for point in points[:5]] == [None, "grid", "grid", "grid", "grid"]


def test_the_same_name_continues_the_sweep_and_other_settings_are_refused(tmp_path, capsys):
    arguments = (*layers(GRID_CONFIG), "--seeds", "2")
    folder, first = plan(tmp_path, *arguments)
    _, again = plan(tmp_path, *arguments)
    assert first == again
    with pytest.raises(SystemExit) as stopped:
        plan(tmp_path, *arguments, "--", "--trainer.max_epochs=3")
    assert stopped.value.code == 2 and "exists with other settings (extra differ)" in capsys.readouterr().err
    assert sweep.main(["--resume", str(folder), "--dry_run"]) == 0
    assert capsys.readouterr().out.splitlines() == [shlex.join(command) for command in first]


@pytest.mark.parametrize(
    ("text", "values"),
    [("1,3,9", ["1", "3", "9"]), ("1e-3, 0.5", ["1e-3", "0.5"]), ("[20,25],[10, 15]", ["[20,25]", "[10, 15]"]),
     ("FixedTemperature,'a,b'", ["FixedTemperature", "'a,b'"])],
)  # fmt: skip
def test_set_values_split_as_a_yaml_flow_sequence_and_stay_as_written(text, values):
    assert split_values(text, "--set k") == values


def test_seeds_and_short_names():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    for bad in ("0", "a", "1,1", "-1,2"):
        with pytest.raises(DistillError, match="--seeds"):
            parse_seeds(bad)
    keys = ["model.temperature_policy.init_args.kd_weight", "model.divergence.init_args.beta", "data.init_args.beta"]
    assert short_names(keys) == {keys[0]: "kd_weight", keys[1]: "divergence.beta", keys[2]: "data.beta"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--config", "missing.yaml"], "config file not found: "),
        ([*layers(GRID_CONFIG), "--set", "model.temperature_policy=FixedTemperature,SigmaAnchoredTemperature"],
         "replaces the GridTemperature of"),
        ([*layers(GRID_CONFIG), "--set", "model.temperature_policy.init_args.T=1,2"], "values of the Grid"),
        ([*layers(GRID_CONFIG), "--set", "seed_everything=1,2"], "--seeds"),
        ([*layers(GRID_CONFIG), "--set", "kd_weight"], "expected KEY=V1,V2"),
        ([*layers(GRID_CONFIG), "--set", "model.x=1,1"], "listed twice"),
        ([*layers(GRID_CONFIG), "--", "--trainer.logger.init_args.save_dir=x"], "its own folder"),
        ([*layers(GRID_CONFIG), "--", "--config=x.yaml"], "--set config="),
        ([*layers(GRID_CONFIG), "--baseline", "T=3.0"], "choose one of: 'T=1.0'"),
        (["--resume", "nowhere"], "is not a sweep folder"),
    ],
)  # fmt: skip
def test_errors_are_one_line_and_exit_2(tmp_path, capsys, arguments, message):
    with pytest.raises(SystemExit) as stopped:
        sweep.main(["--sweep_dir", str(tmp_path), "--dry_run", *arguments])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("distill-sweep: error: ") and message in error, error


def test_a_changed_config_stops_a_resume(tmp_path, capsys):
    layer = grid_layer(tmp_path, [2.0, 4.0])
    folder, _ = plan(tmp_path, *layers(GRID_CONFIG), "--config", str(layer))
    layer.write_text(layer.read_text().replace("4.0", "5.0"))
    with pytest.raises(SystemExit):
        sweep.main(["--resume", str(folder), "--dry_run"])
    assert f"config {layer} changed since this sweep started" in capsys.readouterr().err


def test_slurm_array_script_runs_each_unfinished_point_as_a_task(tmp_path, capsys):
    folder, commands = plan(tmp_path, *layers(GRID_CONFIG), "--seeds", "2")
    # Point 2 has finished (its metrics.json written as distill fit writes it): the array leaves it out.
    write_run_metrics(folder / "T=2.0" / "seed0", {"test/acc1": 0.5}, epochs=1, steps=2, seed=0, fit_seconds=1.0,
                      config_layers=[])  # fmt: skip
    capsys.readouterr()
    slurm = ["--launcher", "slurm", "--jobs", "3", "--sbatch=--time=01:00:00"]
    assert sweep.main(["--resume", str(folder), *slurm, "--dry_run"]) == 0
    script = folder / "sweep.sbatch"
    assert capsys.readouterr().out.splitlines() == [f"sbatch {script}"]
    lines = script.read_text().splitlines()
    assert "#SBATCH --array=1,3-8%3" in lines and "#SBATCH --time=01:00:00" in lines
    assert "#SBATCH --signal=SIGUSR1@90" in lines and "#SBATCH --requeue" in lines
    assert (folder / "slurm").is_dir() and os.access(script, os.X_OK)
    assert lines[-2] == f"cd {REPO}"
    (task_line,) = [line for line in lines if line.startswith("srun ")]
    assert task_line.endswith(f'--resume {folder} --task "$SLURM_ARRAY_TASK_ID" "$@"')
    # The script itself, under bash (srun replaced by a shell function), for task 5 with --dry_run:
    # it names point 5 and prints exactly line 5 of commands.txt.
    result = run_script(script, 5, "--dry_run")
    assert result.returncode == 0, result.stderr
    assert "[5/8] T=1.0/seed1: new" in result.stderr
    assert shlex.split(result.stdout.strip()) == commands[4]
    assert array_spec([4, 1, 2, 3, 9]) == "1-4,9"


def test_a_point_running_in_another_process_is_skipped(tmp_path, capsys):
    folder, _ = plan(tmp_path, *layers(METHODS / "kd.yaml"))
    with open(folder / "kd" / "seed0.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the running point's distill-sweep holds it
        capsys.readouterr()
        assert sweep.main(["--resume", str(folder)]) == 0
    messages = capsys.readouterr().err
    assert "[1/1] kd/seed0: skipped (running in another process)" in messages and "starting" not in messages
    assert not (folder / "kd" / "seed0").exists() and not (folder / "results.csv").exists()


def test_parallel_children_share_the_cores_and_take_the_gpus_in_turn(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    environments = [child_environment(slot, jobs=3) for slot in range(3)]
    assert [environment["CUDA_VISIBLE_DEVICES"] for environment in environments] == ["3", "5", "3"]
    assert environments[0]["OMP_NUM_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 3))
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # the user's own setting wins
    assert child_environment(0, jobs=3)["OMP_NUM_THREADS"] == "7"
    assert child_environment(None, jobs=1) == dict(os.environ)  # one at a time: the environment as it is


def run_script(script: Path, task: int, *arguments: str) -> subprocess.CompletedProcess:
    """Run a generated array script as SLURM would run task ``task``, without a cluster: bash reads the
    ``#SBATCH`` lines as comments, and ``srun`` is a shell function that drops its options and runs the rest."""
    runner = 'srun() { while [[ $1 == -* ]]; do shift; done; "$@"; }; export -f srun; bash "$0" "$@"'
    return subprocess.run(
        ["bash", "-c", runner, str(script), *arguments], capture_output=True, text=True, timeout=300,
        env={**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as file:
        return {row["configuration"]: row for row in csv.DictReader(file)}


def run_files(folder: Path) -> dict[Path, int]:
    """Every file under the sweep's run folders with its modification time (ns)."""
    return {path: path.stat().st_mtime_ns for path in folder.glob("T=*/seed*/**/*") if path.is_file()}


@pytest.mark.slow
def test_real_sweep_of_2_values_x_2_seeds_finishes_skips_on_restart_and_reports(tmp_path, capsys):
    arguments = [*layers(GRID_CONFIG), "--config", str(grid_layer(tmp_path, [2.0, 8.0])), "--seeds", "2",
                 "--sweep_dir", str(tmp_path), "--name", "tiny", "--jobs", "2", "--", *TINY_RUN]  # fmt: skip
    assert sweep.main(arguments) == 0
    folder = tmp_path / "tiny"
    test_top1 = {}
    for label in ("T=2.0", "T=8.0"):
        for seed in (0, 1):
            run = folder / label / f"seed{seed}"
            metrics = read_run_metrics(run)
            assert (metrics["seed"], metrics["epochs"], metrics["steps"]) == (seed, 1, 2)
            saved = yaml.safe_load((run / "config.yaml").read_text())
            assert saved["seed_everything"] == seed
            assert saved["model"]["temperature_policy"]["init_args"]["T"] == float(label[2:])
            assert (run / "checkpoints" / "last.ckpt").is_file()
            assert (folder / label / f"seed{seed}.log").read_text().count("=== distill: run summary ===") == 1
            test_top1[label, seed] = 100 * metrics["metrics"]["test/acc1"]
    rows = read_csv(folder / "results.csv")
    assert list(rows) == ["T=2.0", "T=8.0", "grid mean", "grid best (val)"]
    for label in ("T=2.0", "T=8.0"):
        assert rows[label]["n_seeds"] == "2" and rows[label]["seeds"] == "0 1"
        assert float(rows[label]["test_acc1_mean"]) == pytest.approx((test_top1[label, 0] + test_top1[label, 1]) / 2)
    assert float(rows["grid mean"]["test_acc1_mean"]) == pytest.approx(sum(test_top1.values()) / 4)
    val_means = {label: float(rows[label]["val_acc1_mean"]) for label in ("T=2.0", "T=8.0")}
    assert rows["grid best (val)"]["selected"] == max(val_means, key=val_means.get)
    assert (folder / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| grid best (val): T=" in (folder / "results.md").read_text()

    # Started again: every point is skipped, no run starts, no run file changes.
    before = run_files(folder)
    capsys.readouterr()
    assert sweep.main(arguments) == 0
    messages = capsys.readouterr().err
    assert messages.count("skipped (finished earlier)") == 5 and "starting" not in messages  # 4 points + summary
    assert run_files(folder) == before

    # The report against a baseline: the paired test over the two seeds, as scipy computes it.
    build_report(folder, "T=2.0")
    rows = read_csv(folder / "results.csv")
    by_seed = {label: {seed: test_top1[label, seed] for seed in (0, 1)} for label in ("T=2.0", "T=8.0")}
    expected = compare(by_seed["T=8.0"], by_seed["T=2.0"])
    assert rows["T=8.0"]["test"] == expected.test and rows["T=2.0"]["test"] == "baseline"
    if expected.tested:
        assert float(rows["T=8.0"]["p_value"]) == pytest.approx(expected.p_value)


def last_checkpoint_position(run: Path) -> tuple[int, int]:
    """(epoch index, global step) of the run's last.ckpt."""
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return checkpoint["epoch"], checkpoint["global_step"]


@pytest.mark.slow
def test_an_interrupted_point_resumes_from_its_last_checkpoint_in_its_slurm_task(tmp_path):
    two_epochs = [*TINY_RUN, "--trainer.max_epochs=2"]
    folder, commands = plan(tmp_path, *layers(METHODS / "kd.yaml"),
                            "--set", "model.temperature_policy.init_args.T=2,4", "--", *two_epochs)  # fmt: skip
    assert sweep.main(["--resume", str(folder), "--launcher", "slurm", "--dry_run"]) == 0
    # Point 2 stopped after its first epoch: a checkpoint, no metrics.json. (Its own command, run in this
    # process through the function the `distill` script calls, with one epoch less.)
    command = commands[1]
    cli_main([*command[command.index("fit") :], "--trainer.max_epochs=1"])
    run = folder / "T=4" / "seed0"
    (run / "metrics.json").unlink()
    assert last_checkpoint_position(run) == (0, 2)

    result = run_script(folder / "sweep.sbatch", 2)
    assert result.returncode == 0, result.stderr
    assert f"[2/2] T=4/seed0: resuming from {run / 'checkpoints' / 'last.ckpt'}" in result.stderr
    metrics = read_run_metrics(run)
    assert (metrics["epochs"], metrics["steps"]) == (2, 4)  # one more epoch of 2 steps, not two
    assert last_checkpoint_position(run) == (1, 4)
    assert yaml.safe_load((run / "config.previous-1.yaml").read_text())["trainer"]["max_epochs"] == 1
    assert not (folder / "T=2").joinpath("seed0").exists()  # the task ran its own point only
    assert not (folder / "results.csv").exists()  # not every point has finished


def test_a_config_value_of_several_layers_joined_by_plus(tmp_path):
    adjusted = f"{METHODS / 'dkd.yaml'}+{CONFIGS / 'digits' / 'dkd.yaml'}"
    ctkd = f"{METHODS / 'ctkd_global.yaml'}+{CONFIGS / 'digits' / 'ctkd.yaml'}"
    folder, commands = plan(tmp_path, *layers(), "--set", f"config={adjusted},{ctkd},{METHODS / 'kd.yaml'}")
    assert [config_paths(command)[-1].parent.name for command in commands] == ["dkd", "ctkd_global", "kd"]
    assert [path.name for path in config_paths(commands[0])][3:] == ["dkd.yaml", "dkd.yaml", "seed0.yaml"]
    assert config_paths(commands[0])[4] == CONFIGS / "digits" / "dkd.yaml"
    record = yaml.safe_load((folder / "sweep.yaml").read_text())
    assert str(CONFIGS / "digits" / "ctkd.yaml") in record["config_sha256"]


@pytest.mark.slow
def test_keep_going_runs_the_other_points_and_reports_the_failure(tmp_path, capsys):
    arguments = [*layers(METHODS / "kd.yaml"), "--set", "model.temperature_policy.init_args.T=2,-1",
                 "--sweep_dir", str(tmp_path), "--name", "k", "--keep_going", "--", *TINY_RUN]  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        sweep.main(arguments)
    assert stopped.value.code != 0
    folder = tmp_path / "k"
    assert read_run_metrics(folder / "T=2" / "seed0") is not None  # the good point finished
    reason = (folder / "T=-1" / "seed0.failed").read_text()
    assert reason.startswith("exit status ")  # a bad value stops that run before training
    markdown = (folder / "results.md").read_text()
    assert "T=-1/seed0 (failed: exit status " in markdown
    capsys.readouterr()
    with pytest.raises(SystemExit):  # again: the failed point is not retried, the finished one skipped
        sweep.main(arguments)
    messages = capsys.readouterr().err
    assert "T=-1/seed0: skipped (failed earlier" in messages and "starting" not in messages
