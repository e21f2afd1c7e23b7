"""Every published experiment (``distill.experiments.EXPERIMENTS``: 7 CIFAR-100 pairs x 9 methods, the TALS recipe,
ImageNet ResNet-34 -> ResNet-18) builds its module and data module through the ``distill`` command's parser on
stand-in files, with the papers' hyperparameters; one 2-step CPU run of resnet32x4 -> resnet8x4 (KD). Each runs by
name (``python -m distill.experiments run <name>``, ``make experiment NAME=<name>``) with those same layers, and
docs/experiments.md and the README show the catalogue as it is.

The stand-ins are written here in the real formats: CIFAR-100 pickles, an ImageFolder tree of 1,000 classes,
teacher files of random weights (CRD/mdistiller's ``ckpt_epoch_240.pth``, this project's self-describing file,
torchvision's plain state_dict). Building every experiment's models from scratch would take minutes, so each
architecture is built (and each teacher file read) once and reused by the experiments that share it.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from distill.cli import cli_main
from distill.errors import DistillError
from distill.experiments import CIFAR_METHODS, CIFAR_PAIRS, EXPERIMENTS, TALS_PAIR, Experiment, readme_table
from distill.experiments_cli import main as experiments_main
from distill.experiments_cli import run_command
from distill.models import create
from distill.run_metrics import read_run_metrics
from distill.sweep.definition import Sweep
from distill.sweep.point import distill_command, sweep_command, write_override
from teachers import load_teacher, save_teacher_checkpoint
from tests.conftest import REPO, config_args
from tests.fake_data import random_cifar100, write_image_folder

CIFAR = (3, 32, 32)
IMAGENET = (3, 224, 224)
IMAGENET_CLASSES = ["n01440764", "n01443537", "n01484850"]  # the stand-in tree: 3 of the 1,000 class folders

# -- the published values, from the papers and their official code (sources: configs/README.md) ------------------
RECIPES = {  # data layer: the training recipe every run of that data set resolves to
    "cifar100": {"max_epochs": 240, "milestones": [150, 180, 210], "gamma": 0.1, "momentum": 0.9,
                 "weight_decay": 5e-4, "batch_size": 64, "data": "CIFAR100DataModule"},
    "imagenet": {"max_epochs": 100, "milestones": [30, 60, 90], "gamma": 0.1, "momentum": 0.9,
                 "weight_decay": 1e-4, "batch_size": 64, "data": "ImageNetDataModule"},  # 64 per GPU x 8 = 512
}  # fmt: skip
PAIRS = {  # pair: teacher (registry name), student, learning rate
    "resnet32x4-resnet8x4": ("resnet32x4_cifar100", "resnet8x4", 0.05),
    "vgg13-vgg8": ("vgg13_cifar100", "vgg8", 0.05),
    "wrn_40_2-wrn_16_2": ("wrn_40_2_cifar100", "wrn_16_2", 0.05),
    "wrn_40_2-wrn_40_1": ("wrn_40_2_cifar100", "wrn_40_1", 0.05),
    "resnet56-resnet20": ("resnet56_cifar100", "resnet20", 0.05),
    "resnet110-resnet32": ("resnet110_cifar100", "resnet32", 0.05),
    "resnet32x4-ShuffleV2": ("resnet32x4_cifar100", "ShuffleV2", 0.01),  # ShuffleNet/MobileNet students: 0.01
    "ResNet34-ResNet18": ("ResNet34_cifar100", "ResNet18", 0.05),
    "imagenet_resnet34-imagenet_resnet18": ("imagenet_resnet34_torchvision", "imagenet_resnet18", 0.2),
}
DKD_BETA = {"resnet32x4": 8.0, "ResNet34": 8.0, "vgg13": 6.0, "wrn_40_2": 6.0, "resnet56": 2.0, "resnet110": 2.0}
LSKD_TAU = {"vgg13-vgg8": 3.0}  # else 2 (the LSKD authors' logs)
ZDKD = {  # pair: (tau, KD weight, DKD beta) of the LSKD authors' logs `dkd,<T>,<S>,tau,weight[,beta]`; alpha = weight
    "resnet32x4-resnet8x4": (2.0, 9.0, 8.0), "resnet32x4-ShuffleV2": (2.0, 9.0, 8.0),
    "vgg13-vgg8": (2.0, 15.0, 2.0), "resnet110-resnet32": (2.0, 15.0, 2.0),
    "wrn_40_2-wrn_16_2": (2.0, 12.0, 2.0), "wrn_40_2-wrn_40_1": (2.0, 12.0, 2.0),
    "resnet56-resnet20": (3.0, 18.0, 2.0),
}  # fmt: skip
TTM = {  # pair: (gamma = 1/T, TTM beta, WTTM beta), TTM paper appendix A.4
    "resnet32x4-resnet8x4": (0.1, 100.0, 3.0), "vgg13-vgg8": (0.1, 45.0, 2.25),
    "wrn_40_2-wrn_16_2": (0.1, 101.0, 4.0), "wrn_40_2-wrn_40_1": (0.1, 76.0, 3.0),
    "resnet56-resnet20": (0.3, 7.0, 1.5), "resnet110-resnet32": (0.1, 33.0, 1.5),
    "resnet32x4-ShuffleV2": (0.4, 40.0, 16.0),
}  # fmt: skip


def fixed(T: float, ce: float, kd: float, standardize: bool = False) -> dict:
    return {"policy": "FixedTemperature", "policy.T": T, "policy.ce_weight": ce, "policy.kd_weight": kd,
            "policy.standardize": standardize}  # fmt: skip


def dkd(alpha: float, beta: float, warmup: int) -> dict:
    return {"divergence": "DKD", "divergence.alpha": alpha, "divergence.beta": beta, "divergence.warmup": warmup}


def method_values(data: str, pair: str, method: str) -> dict:
    """The published hyperparameters of ``method`` for ``pair`` on ``data``."""
    kl = {"divergence": "KL"}
    teacher_architecture = pair.split("-")[0]
    if data == "imagenet":
        return {
            "kd": {**fixed(1.0, 0.5, 0.5), **kl},  # mdistiller r34_r18
            "lskd": {**fixed(2.0, 1.0, 9.0, True), **kl},  # LSKD's r34_r18 config (CE 1) with tau 2, weight 9
            "ctkd_global": {"policy": "CurriculumTemperature", "policy.ramp_epochs": 5, "policy.ce_weight": 1.0,
                            "policy.kd_weight": 1.0, **kl},  # CTKD's ImageNet script  # fmt: skip
            "dkd": {**fixed(1.0, 1.0, 1.0), **dkd(1.0, 0.5, 1)},  # mdistiller r34_r18
            "ttm": {"policy": "TransformedTeacherTemperature", "policy.T": 1.25, "policy.beta": 1.25,
                    "policy.weighted": False, **kl},  # not published: WTTM's T, KD-matching beta  # fmt: skip
            "wttm": {"policy": "TransformedTeacherTemperature", "policy.T": 1.25, "policy.beta": 1.6,
                     "policy.weighted": True, **kl},  # TTM paper Table 10  # fmt: skip
        }[method]
    if method in ("ttm", "wttm"):
        gamma, ttm_beta, wttm_beta = TTM[pair]
        beta, weighted = (ttm_beta, False) if method == "ttm" else (wttm_beta, True)
        return {"policy": "TransformedTeacherTemperature", "policy.T": 1 / gamma, "policy.beta": beta,
                "policy.weighted": weighted, **kl}  # fmt: skip
    if method == "zdkd":
        tau, weight, beta = ZDKD[pair]
        return {**fixed(tau, 1.0, weight, True), **dkd(1.0, beta, 20)}
    return {
        "kd": {**fixed(4.0, 0.1, 0.9), **kl},
        "lskd": {**fixed(LSKD_TAU.get(pair, 2.0), 0.1, 9.0, True), **kl},
        "ctkd_global": {"policy": "CurriculumTemperature", "policy.mode": "global", "policy.t_min": 1.0,
                        "policy.t_range": 20.0, "policy.ramp_epochs": 10, "policy.ce_weight": 0.1,
                        "policy.kd_weight": 0.9, **kl},  # fmt: skip
        "max_logit": {"policy": "MaxLogitTemperature", "policy.source": "both", "policy.ce_weight": 0.1,
                      "policy.kd_weight": 9.0, **kl},  # fmt: skip
        "tals": {"policy": "SigmaAnchoredTemperature", **kl},
        "dkd": {**fixed(4.0, 1.0, 1.0), **dkd(1.0, DKD_BETA[teacher_architecture], 20)},
    }[method]


def expected_values(experiment: Experiment) -> dict:
    """Everything the experiment must resolve to: recipe, pair, method, and the TALS recipe's additions."""
    teacher, student, lr = PAIRS[experiment.pair]
    values = {**RECIPES[experiment.data], "teacher": teacher, "student": student, "lr": lr}
    if experiment.method != "grid":
        values |= method_values(experiment.data, experiment.pair, experiment.method)
    if experiment.data == "cifar100":
        tals = experiment.pair == TALS_PAIR  # SAM + AutoAugment + Cutout
        values |= {"optimizer": "SAM" if tals else "SGD", "auto_augment": tals, "cutout": tals}
        values |= {"rho": 0.05, "cutout_size": 16} if tals else {}
    else:
        values |= {"optimizer": "SGD", "image_size": 224, "resize_size": 256}
    return values


# -- stand-in files -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """Fake CIFAR-100 (5,200 training images: the config holds 5,000 out), a small ImageNet tree, and teacher files
    of random weights (freshly initialised models) in ``$DISTILL_TEACHER_DIR`` (``teachers/checkpoints`` pointed at
    an empty folder)."""
    root = tmp_path_factory.mktemp("experiments")
    teacher_dir, empty = root / "teachers", root / "empty"
    empty.mkdir()
    for architecture in sorted({pair.split("-")[0] for pair in CIFAR_PAIRS}):
        path = teacher_dir / "cifar_teachers" / f"{architecture}_vanilla" / "ckpt_epoch_240.pth"
        path.parent.mkdir(parents=True)
        model = create(architecture, num_classes=100, input_shape=CIFAR)
        torch.save({"epoch": 240, "model": model.state_dict(), "accuracy": 1.0}, path)
    resnet34 = create("ResNet34", num_classes=100, input_shape=CIFAR)
    save_teacher_checkpoint(teacher_dir / "ResNet34_cifar100.pt", resnet34, "ResNet34", 100, CIFAR,
                            "distill.data.CIFAR100DataModule", 0.0123)  # fmt: skip
    (teacher_dir / "imagenet").mkdir()
    torchvision_file = teacher_dir / "imagenet" / "resnet34-b627a593.pth"
    torch.save(create("imagenet_resnet34", num_classes=1000, input_shape=IMAGENET).state_dict(), torchvision_file)
    random_cifar100(root / "cifar", train=5200, test=100)
    write_image_folder(root / "imagenet" / "train", IMAGENET_CLASSES, per_class=3, size=(40, 30))
    write_image_folder(root / "imagenet" / "val", IMAGENET_CLASSES, per_class=1, size=(30, 40), seed=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTILL_TEACHER_DIR", str(teacher_dir))
        patch.setattr("teachers.registry.CHECKPOINT_DIR", empty)
        yield root


@pytest.fixture(scope="module")
def model_cache(stand_ins):
    """Each architecture built, and each teacher file read, once (building is all the build tests would otherwise
    spend their time on): ``(build_student, read_teacher, names built)``."""
    builds: list[str] = []

    @functools.cache
    def build_student(name, num_classes, input_shape):
        builds.append(name)
        return create(name, num_classes=num_classes, input_shape=input_shape)

    @functools.cache
    def read_teacher(name, num_classes, input_shape):
        builds.append(name)
        return load_teacher(name, num_classes, input_shape)

    return build_student, read_teacher, builds


@pytest.fixture
def shared_models(model_cache, monkeypatch):
    """``DistillationModule`` gets the same modules for every experiment that names them."""
    build_student, read_teacher, builds = model_cache
    monkeypatch.setattr("distill.module.create", lambda name, num_classes, input_shape: build_student(
        name, num_classes, tuple(input_shape)))  # fmt: skip
    monkeypatch.setattr("distill.module.load_teacher", lambda name, num_classes, input_shape: read_teacher(
        name, num_classes, tuple(input_shape)))  # fmt: skip
    return builds


def data_arguments(experiment: Experiment, root: Path) -> list[str]:
    """The one override of every build: where the stand-in files are (the configs name data/...)."""
    return [f"--data.data_dir={root / ('cifar' if experiment.data == 'cifar100' else 'imagenet')}"]


def build(layers: list, arguments: list[str], runs: Path):
    """``distill fit``'s parse and instantiation of the layers, without running: the CLI (model, data, trainer)."""
    return cli_main([*config_args(layers), *arguments, f"--trainer.default_root_dir={runs}",
                     f"--trainer.logger.init_args.save_dir={runs}"], run=False)  # fmt: skip


def resolved_values(cli) -> dict:
    """What the run would train with: the built policy, divergence, optimizer, scheduler, data module, trainer."""
    model, data = cli.model, cli.datamodule
    optimizers = model.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    group = optimizer.param_groups[0]
    plain = (int, float, str, bool)
    values = {
        "teacher": model.hparams.teacher, "student": model.hparams.student,
        "policy": type(model.temperature_policy).__name__, "divergence": type(model.divergence).__name__,
        "optimizer": type(optimizer).__name__, "lr": group["lr"], "momentum": group["momentum"],
        "weight_decay": group["weight_decay"], "rho": group.get("rho"),
        "milestones": sorted(scheduler.milestones), "gamma": scheduler.gamma, "max_epochs": cli.trainer.max_epochs,
        "data": type(data).__name__,
    }  # fmt: skip
    for prefix, part in (("policy", model.temperature_policy), ("divergence", model.divergence)):
        values |= {f"{prefix}.{key}": value for key, value in vars(part).items() if isinstance(value, plain)}
    for key in ("batch_size", "auto_augment", "cutout", "cutout_size", "image_size", "resize_size"):
        values[key] = getattr(data, key, None)
    return values


def assert_matches(values: dict, expected: dict, name: str) -> None:
    wrong = {
        key: (values.get(key), want)
        for key, want in expected.items()
        if not (values.get(key) == want or (isinstance(want, float) and math.isclose(values.get(key) or 0, want)))
    }
    assert not wrong, f"{name}: resolved (got, published) differ: {wrong}"


def test_the_catalogue_covers_every_pair_and_method_of_the_published_table():
    cifar = {(experiment.pair, experiment.method) for experiment in EXPERIMENTS if experiment.pair in CIFAR_PAIRS}
    assert cifar == {(pair, method) for pair in CIFAR_PAIRS for method in CIFAR_METHODS}
    assert {experiment.method for experiment in EXPERIMENTS if experiment.pair == TALS_PAIR} == {"tals", "grid", "dkd"}
    imagenet = {experiment.method for experiment in EXPERIMENTS if experiment.data == "imagenet"}
    assert imagenet == {"kd", "lskd", "ctkd_global", "dkd", "ttm", "wttm"}
    for experiment in EXPERIMENTS:
        assert all(path.is_file() for path in experiment.layers()), experiment.name


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=[experiment.name for experiment in EXPERIMENTS])
def test_every_experiment_builds_with_the_published_hyperparameters(experiment, stand_ins, shared_models, tmp_path):
    arguments = data_arguments(experiment, stand_ins)
    if experiment.is_sweep:  # the grid: built as distill-sweep runs it, one FixedTemperature run per T
        sweep = Sweep.from_arguments([str(layer) for layer in experiment.layers()], [], "1", [])
        points = sweep.points()
        assert [point.configuration.policy["T"] for point in points] == [1.0, 2.0, 4.0, 8.0]
        for point in points:
            override = write_override(point, stand_ins / "sweep")
            cli = build([*experiment.layers(), override], arguments, tmp_path)
            expected = expected_values(experiment) | fixed(point.configuration.policy["T"], 0.1, 0.9)
            assert_matches(resolved_values(cli), expected, f"{experiment.name} {point.label}")
        return
    cli = build(experiment.layers(), arguments, tmp_path)
    assert_matches(resolved_values(cli), expected_values(experiment), experiment.name)
    model, data = cli.model, cli.datamodule
    assert model.teacher is not None and model.hparams.num_classes == data.num_classes
    assert not model.teacher.training and not any(parameter.requires_grad for parameter in model.teacher.parameters())


def test_each_architecture_and_teacher_file_was_built_once(shared_models):
    assert len(shared_models) == len(set(shared_models)) > 0


@pytest.mark.parametrize("recipe", ["cifar100", "tals", "imagenet"])
def test_the_data_modules_read_the_stand_in_files(recipe, stand_ins, shared_models, tmp_path):
    """One batch per distinct data configuration, and the experiment's teacher on it. The ImageNet stand-in tree
    has 3 classes, so its data module is told so (and holds out 3 images, not 10,000) and the run trains without
    its 1,000-class teacher, which is run on the batch by itself."""
    experiment = {
        "cifar100": next(e for e in EXPERIMENTS if e.data == "cifar100" and e.pair == "resnet32x4-resnet8x4"),
        "tals": next(e for e in EXPERIMENTS if e.pair == TALS_PAIR and e.method == "tals"),
        "imagenet": next(e for e in EXPERIMENTS if e.data == "imagenet" and e.method == "kd"),
    }[recipe]
    small_tree = [f"--data.num_classes={len(IMAGENET_CLASSES)}", "--data.val_size=3", "--data.num_workers=0",
                  "--model.teacher=null"]  # fmt: skip
    arguments = data_arguments(experiment, stand_ins) + (small_tree if recipe == "imagenet" else [])
    cli = build(experiment.layers(), arguments, tmp_path)
    model, data = cli.model, cli.datamodule
    data.setup("fit")
    images, labels, index = next(iter(data.train_dataloader()))
    batch = 64 if recipe != "imagenet" else 3 * len(IMAGENET_CLASSES) - 3
    assert images.shape == (batch, *model.hparams.input_shape) and images.dtype == torch.float32
    assert labels.shape == index.shape == (batch,)
    if recipe == "tals":  # Cutout: each image has a 16x16 (clipped at the border) hole of zeros
        assert data.train_transform().auto_augment is not None and data.train_transform().cutout == 16
        assert all(int((image == 0).all(0).sum()) >= 64 for image in images)
    teacher = model.teacher if recipe != "imagenet" else load_teacher(PAIRS[experiment.pair][0], 1000, IMAGENET)
    with torch.no_grad():  # the teacher file of random weights sees the batch
        assert teacher(images[:2]).shape == (2, 100 if recipe != "imagenet" else 1000)


def test_the_docs_show_every_command_with_its_layers_and_published_number():
    lines = (REPO / "docs" / "experiments.md").read_text().splitlines()
    for experiment in EXPERIMENTS:
        rows = [line for line in lines if f"`{experiment.command()}`" in line]
        assert len(rows) == 1, f"docs/experiments.md: {len(rows)} rows of {experiment.name}: {experiment.command()}"
        cells = rows[0].split(" | ")
        shown = re.findall(r"`([^`]+)`", cells[3])  # the column of further layers
        assert shown == experiment.further_layers(), (experiment.name, shown)
        if experiment.published is not None:
            assert re.search(rf"\b{re.escape(experiment.published)}\b", rows[0]), experiment.name


# -- by name: python -m distill.experiments list | run | readme, make experiment ----------------------------------
def experiments_command(*arguments: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python -m distill.experiments ...`` as a user runs it (``run`` execs the installed command)."""
    return subprocess.run([sys.executable, "-m", "distill.experiments", *arguments], cwd=cwd, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_list_prints_every_experiment_with_its_published_number(capsys):
    assert experiments_main(["list"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [row[0] for row in rows] == [experiment.name for experiment in EXPERIMENTS]
    assert len({row[0] for row in rows}) == len(EXPERIMENTS)
    assert [" ".join(row[1:]) for row in rows] == [experiment.published or "—" for experiment in EXPERIMENTS]


def test_run_of_an_unknown_name_stops_with_one_line_naming_close_matches():
    result = experiments_command("run", "cifar100/vgg13-vgg8/dkdd")
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("distill.experiments: error: unknown experiment 'cifar100/vgg13-vgg8/dkdd'")
    assert "cifar100/vgg13-vgg8/dkd," in result.stderr and "distill.experiments list" in result.stderr


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=[experiment.name for experiment in EXPERIMENTS])
def test_run_gives_the_installed_command_the_experiments_layers_in_order(experiment):
    layers = [f"--config={layer}" for layer in experiment.layers()]
    command = run_command(experiment, ["--trainer.precision=bf16-mixed"])
    if experiment.is_sweep:  # every run's arguments after distill-sweep's `--`
        assert command == [*sweep_command(), *layers, "--", "--trainer.precision=bf16-mixed"]
    else:
        assert command == [*distill_command(), "fit", *layers, "--trainer.precision=bf16-mixed"]


def test_run_of_the_grid_takes_the_sweeps_options_before_a_separator():
    grid = next(experiment for experiment in EXPERIMENTS if experiment.is_sweep)
    layers = [f"--config={layer}" for layer in grid.layers()]
    command = run_command(grid, ["--seeds", "3", "--dry_run", "--", "--trainer.max_epochs=1"])
    assert command == [*sweep_command(), *layers, "--seeds", "3", "--dry_run", "--", "--trainer.max_epochs=1"]
    assert run_command(grid, ["--seeds", "3", "--"]) == [*sweep_command(), *layers, "--seeds", "3"]


def test_run_of_one_run_refuses_the_sweeps_separator():
    one_run = next(experiment for experiment in EXPERIMENTS if not experiment.is_sweep)
    with pytest.raises(DistillError, match="only a grid takes"):
        run_command(one_run, ["--seeds", "3", "--", "--trainer.max_epochs=1"])


def test_run_print_config_resolves_the_published_dkd_of_vgg13_to_vgg8(tmp_path):
    """``distill fit --print_config`` parses the layers and prints the whole configuration, building nothing; from
    another folder, as the layers are given by their full paths."""
    experiment = next(e for e in EXPERIMENTS if e.name == "cifar100/vgg13-vgg8/dkd")
    result = experiments_command("run", experiment.name, "--print_config", "--trainer.precision=bf16-mixed",
                                 cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    model, policy, divergence = config["model"], config["model"]["temperature_policy"], config["model"]["divergence"]
    printed = {
        "teacher": model["teacher"], "student": model["student"], "lr": model["optimizer"]["init_args"]["lr"],
        "policy": policy["class_path"].rsplit(".", 1)[1], "divergence": divergence["class_path"].rsplit(".", 1)[1],
        **{f"policy.{key}": value for key, value in policy["init_args"].items()},
        **{f"divergence.{key}": value for key, value in divergence["init_args"].items()},
        "max_epochs": config["trainer"]["max_epochs"], "data": config["data"]["class_path"].rsplit(".", 1)[1],
    }  # fmt: skip
    expected = {key: value for key, value in expected_values(experiment).items() if key in printed}
    assert {"policy", "divergence", "divergence.beta", "teacher"} <= set(expected)
    assert expected["policy"] == "FixedTemperature" and expected["divergence.beta"] == 6.0
    assert_matches(printed, expected, experiment.name)
    assert config["trainer"]["precision"] == "bf16-mixed"  # the extra arguments come after the layers


def test_run_of_the_grid_is_a_distill_sweep_and_dry_run_runs_nothing(tmp_path):
    grid = next(experiment for experiment in EXPERIMENTS if experiment.is_sweep)
    result = experiments_command("run", grid.name, "--dry_run", "--sweep_dir", str(tmp_path), "--name", "grid", "--",
                                 "--trainer.max_epochs=1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    sweep = tmp_path / "grid"
    commands = [shlex.split(line) for line in result.stdout.splitlines()]
    assert result.stdout == (sweep / "commands.txt").read_text()
    layers = [f"--config={layer}" for layer in grid.layers()]
    for T, command in zip(("1.0", "2.0", "4.0", "8.0"), commands, strict=True):
        fit = command.index("fit")
        assert command[fit + 1 :] == [*layers, f"--config={sweep / f'T={T}' / 'seed0.yaml'}", "--trainer.max_epochs=1"]
    written = {str(path.relative_to(sweep)) for path in sweep.rglob("*") if path.is_file()}
    assert written == {"sweep.yaml", "commands.txt", *(f"T={T}/seed0.yaml" for T in ("1.0", "2.0", "4.0", "8.0"))}


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_experiment_runs_the_named_experiment_and_needs_a_name():
    stamp = ["-o", ".venv/.installed", "--no-print-directory"]  # as installed: the test checks the target
    # Under `make test` the parent make's MAKEFLAGS/MAKELEVEL would add "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    missing = subprocess.run(["make", "-s", *stamp, "experiment"], cwd=REPO, capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and missing.stderr.splitlines()[0] == (
        "make experiment: give NAME=<name>; make experiments lists the names")
    planned = subprocess.run(["make", "-n", *stamp, "experiment", "NAME=cifar100/vgg13-vgg8/dkd",
                              "ARGS=--trainer.precision=bf16-mixed"], cwd=REPO, capture_output=True, text=True, env=env)
    assert planned.returncode == 0 and planned.stdout.splitlines()[-1] == (
        ".venv/bin/python -m distill.experiments run cifar100/vgg13-vgg8/dkd --trainer.precision=bf16-mixed")
    listed = subprocess.run(["make", "-n", *stamp, "experiments"], cwd=REPO, capture_output=True, text=True, env=env)
    assert listed.stdout.splitlines()[-1] == ".venv/bin/python -m distill.experiments list"


def test_the_readme_table_holds_every_published_number(capsys):
    table = readme_table()
    rows = [line.strip("|").split(" | ") for line in table.splitlines() if line.startswith("| ")]
    methods = [method.strip() for method in rows[0][1:]]
    assert methods == [m for m in CIFAR_METHODS if m not in ("max_logit", "tals")]  # those publish no CIFAR number
    cifar = {row[0].strip(): [cell.strip() for cell in row[1:]] for row in rows[1 : 1 + len(CIFAR_PAIRS)]}
    assert list(cifar) == list(CIFAR_PAIRS)
    published = {e.name: e.published for e in EXPERIMENTS}
    for pair, cells in cifar.items():
        assert cells == [published[f"cifar100/{pair}/{method}"] for method in methods], pair
    others = [e for e in EXPERIMENTS if e.data != "cifar100" or e.pair == TALS_PAIR]
    named = [[cell.strip().strip("`") for cell in row] for row in rows[2 + len(CIFAR_PAIRS) :]]
    assert [row[:2] for row in named] == [[e.name, e.published or "—"] for e in others]
    assert experiments_main(["readme"]) == 0 and capsys.readouterr().out == table + "\n"


README_MARKERS = ("<!-- experiments:start -->", "<!-- experiments:end -->")


def readme_block(text: str) -> str | None:
    """The text between the README's experiments markers, without the newlines around it (``None``: no markers)."""
    start, end = README_MARKERS
    if start not in text and end not in text:
        return None
    assert text.count(start) == text.count(end) == 1 and text.index(start) < text.index(end), "one pair, in order"
    return text[text.index(start) + len(start) : text.index(end)].strip("\n")


def test_the_readme_block_is_what_lies_between_the_markers():
    start, end = README_MARKERS
    assert readme_block(f"# x\n{start}\n| a |\n|---|\n{end}\nmore") == "| a |\n|---|"
    assert readme_block("# no table here") is None
    with pytest.raises(AssertionError, match="one pair"):
        readme_block(f"{end}\n{start}")


def test_the_readme_shows_the_table_as_generated():
    """README.md, between its marker comments (where it has them), is ``readme_table()`` exactly."""
    block = readme_block((REPO / "README.md").read_text())
    if block is None:
        pytest.skip("README.md has no experiments markers yet")
    assert block == readme_table(), "README.md drifted: paste `python -m distill.experiments readme` there"


@pytest.mark.slow
def test_two_cpu_steps_of_resnet32x4_to_resnet8x4(stand_ins, tmp_path):
    """The real path, fresh models: ``distill fit`` of the published KD experiment for 2 steps on the CPU."""
    experiment = next(e for e in EXPERIMENTS if e.pair == "resnet32x4-resnet8x4" and e.method == "kd")
    cli = cli_main([
        "fit", *config_args(experiment.layers()), *data_arguments(experiment, stand_ins), "--data.batch_size=8",
        # (limits of 2 batches: jsonargparse reads a limit of "1" as the float 1.0, i.e. every batch)
        "--trainer.max_steps=2", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2",
        "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
    ])  # fmt: skip
    trainer = cli.trainer
    assert trainer.global_step == 2 and trainer.max_epochs == 240
    record = read_run_metrics(trainer.log_dir)
    assert record["steps"] == 2 and math.isfinite(record["metrics"]["test/loss"])
    assert all(0.0 <= record["metrics"][key] <= 1.0 for key in ("test/acc1", "test/teacher_acc1"))
    teacher_file = Path(stand_ins / "teachers" / "cifar_teachers" / "resnet32x4_vanilla" / "ckpt_epoch_240.pth")
    written = torch.load(teacher_file, weights_only=True)["model"]
    assert all(torch.equal(cli.model.teacher.state_dict()[key], value) for key, value in written.items())
    assert Path(trainer.log_dir).parts[-4:-1] == ("cifar100", "resnet32x4-resnet8x4", "kd")

