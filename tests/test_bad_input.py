"""Bad input to ``distill fit`` stops before any training with one line on stderr naming the field or file, what
was given and what is expected (choices listed), exit status 2 and no traceback.

Each case runs the ``distill`` entry point (``distill.cli.main``) in this process on a real command line, with
real files written by the test in the real formats (tests/test_cli.py runs the installed script on a missing
teacher and checks that its whole stderr is the one line).
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from callbacks import PerSampleStatistics
from distill.cli import main
from distill.data import DigitsDataModule
from distill.divergences import DKD
from distill.errors import DistillError
from distill.models import create
from distill.module import DistillationModule
from distill.policies import (
    CurriculumTemperature, FixedTemperature, GridTemperature, MaxLogitTemperature, SigmaAnchoredTemperature,
    TransformedTeacherTemperature,
)  # fmt: skip
from teachers import save_teacher_checkpoint
from tests.conftest import CONFIGS, DEFAULT_CONFIG, SHORT_RUN, config_args, experiment, run_cli
from tests.fake_data import random_cifar100

POLICIES = ("CurriculumTemperature, FixedTemperature, GridTemperature, MaxLogitTemperature, SigmaAnchoredTemperature, "
            "TransformedTeacherTemperature")


class NotPlainWeights:
    """An object a checkpoint must never hold: loading it would run pickled code."""

    def __init__(self):
        self.payload = [1, 2, 3]


def config_pairs(layers: list[Path]) -> list[str]:
    """``--config <layer>`` for each layer, as two arguments (distill-sweep's argparse form)."""
    return [argument for layer in layers for argument in ("--config", str(layer))]


def distill_error(capfd, monkeypatch, tmp_path: Path, *arguments: str, config: list[Path] = DEFAULT_CONFIG) -> str:
    """Run ``distill fit <layers> <short run> <arguments>`` in ``tmp_path``; check it stopped with status 2, its
    whole stderr one ``distill: error:`` line (no traceback, no usage, no log lines), and no run folder opened;
    return the message."""
    monkeypatch.chdir(tmp_path)
    argv = ["distill", "fit", *config_args(config), *SHORT_RUN, f"--trainer.default_root_dir={tmp_path}", *arguments]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    _, err = capfd.readouterr()
    assert exit_info.value.code == 2, err[-2000:]
    assert "Traceback" not in err and "usage:" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("distill: error: "), err[-2000:]  # the whole of stderr
    assert not (tmp_path / "runs").exists(), "a run folder was opened"
    return lines[0].removeprefix("distill: error: ")


# (id, arguments, fragments every one of which the line must hold)
VALUE_CASES = [
    ("negative T", ["--model.temperature_policy=FixedTemperature", "--model.temperature_policy.T=-1"],
     ["model.temperature_policy.init_args.T", "got -1.0", "expected a temperature > 0"]),
    ("negative KD weight", ["--model.temperature_policy=FixedTemperature", "--model.temperature_policy.kd_weight=-0.5"],
     ["model.temperature_policy.init_args.kd_weight", "got -0.5", "expected a loss weight >= 0"]),
    ("argument of another policy", ["--model.temperature_policy.kd_weight=0.5"],  # tals.yaml: SigmaAnchoredTemperature
     ["model.temperature_policy.kd_weight: SigmaAnchoredTemperature has no argument 'kd_weight' (it takes alpha_fn)"]),
    ("max-logit source",
     ["--model.temperature_policy=MaxLogitTemperature", "--model.temperature_policy.source=student"],
     ["model.temperature_policy.source: got 'student', expected one of 'both', 'teacher'"]),
    ("batch size not a number", ["--data.batch_size=x"], ["data.batch_size", "got 'x'", "expected int"]),
    ("batch size zero", ["--data.batch_size=0"],
     ["data.init_args.batch_size: got 0, expected a number of samples per batch >= 1"]),
    ("fraction out of range", ["--data.val_fraction=1.5"],
     ["data.init_args.val_fraction: got 1.5, expected a share of the data strictly between 0 and 1"]),
    ("epochs out of range", ["--trainer.max_epochs=0"], ["trainer.max_epochs", "got 0", ">= 1", "distill test"]),
    ("epochs not a number", ["--trainer.max_epochs=abc"], ["trainer.max_epochs", "got 'abc'", "int or null"]),
    ("unknown policy", ["--model.temperature_policy=NoSuchTemperature"],
     ["model.temperature_policy: unknown policy 'NoSuchTemperature'", f"choose one of {POLICIES}"]),
    ("a divergence as policy", ["--model.temperature_policy=KL"], ["unknown policy 'KL'", POLICIES]),
    ("unknown divergence", ["--model.divergence=Nope"], ["model.divergence: unknown divergence 'Nope'", "DKD, KL"]),
    ("unknown data module", ["--data=NoData"], ["data: unknown data module 'NoData'", "DigitsDataModule"]),
    ("unknown model", ["--model.student=resnet9000"],
     ["model.student", "unknown model 'resnet9000'", "mlp_small", "resnet8x4"]),
    ("unknown teacher", ["--model.teacher=nope"], ["model.teacher", "unknown teacher 'nope'", "digits_cnn"]),
    ("student for other images", ["--model.student=imagenet_resnet18"],
     ["model.student", "take 3-channel images, got (1, 8, 8)"]),
]


@pytest.mark.parametrize("arguments, fragments", [case[1:] for case in VALUE_CASES],
                         ids=[case[0] for case in VALUE_CASES])
def test_bad_value(capfd, monkeypatch, tmp_path, arguments, fragments):
    message = distill_error(capfd, monkeypatch, tmp_path, *arguments)
    for fragment in fragments:
        assert fragment in message, message


def test_config_file_that_does_not_parse(capfd, monkeypatch, tmp_path):
    layer = tmp_path / "broken.yaml"
    layer.write_text("trainer:\n  max_epochs: 3\n  callbacks: [1, 2\nmodel: {}\n")
    message = distill_error(capfd, monkeypatch, tmp_path, config=[*DEFAULT_CONFIG, layer])
    assert message.startswith(f"config file {layer}, line 4, column ") and "fix the YAML" in message
    missing = tmp_path / "missing.yaml"
    message = distill_error(capfd, monkeypatch, tmp_path, config=[*DEFAULT_CONFIG, missing])
    assert message.startswith(f"--config {missing}: file not found")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    message = distill_error(capfd, monkeypatch, tmp_path, config=[*DEFAULT_CONFIG, listing])
    assert f"config file {listing}: got a YAML list, expected a mapping" in message


def test_empty_grid(capfd, monkeypatch, tmp_path):
    from distill import sweep

    layer = tmp_path / "empty_grid.yaml"
    grid = {"class_path": "distill.policies.GridTemperature", "init_args": {"values": []}}
    layer.write_text(yaml.safe_dump({"model": {"temperature_policy": grid}}))
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["--sweep_dir", str(tmp_path), "--dry_run", *config_pairs([*DEFAULT_CONFIG, layer])])
    err = capfd.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "model.temperature_policy.init_args.values: got [], expected a non-empty list of temperatures > 0" in err


def test_data_folder_missing_or_truncated(capfd, monkeypatch, tmp_path):
    cifar = [*DEFAULT_CONFIG, CONFIGS / "data" / "cifar100.yaml"]
    student = ("--model.teacher=null", "--model.student=mlp_small", "--data.num_workers=0", "--data.val_size=100")
    missing = tmp_path / "nowhere"
    message = distill_error(capfd, monkeypatch, tmp_path, *student, f"--data.data_dir={missing}", config=cifar)
    assert message.startswith(f"CIFAR-100 not found: expected the files train, test, meta of the official python "
                              f"version in {missing / 'cifar-100-python'}/")  # fmt: skip
    folder = random_cifar100(tmp_path / "data", train=1000, test=200)
    whole = (folder / "train").read_bytes()
    (folder / "train").write_bytes(whole[: len(whole) // 3])
    message = distill_error(capfd, monkeypatch, tmp_path, *student, f"--data.data_dir={tmp_path / 'data'}", config=cifar)
    assert message.startswith(f"{folder / 'train'}: not a readable CIFAR-100 file") and "replace it with the file" in message


# ----------------------------------------------------------------------------------------- teacher files
def write_teacher(path: Path, architecture="cnn_large", num_classes=10, input_shape=(1, 8, 8)) -> Path:
    model = create(architecture, num_classes=num_classes, input_shape=input_shape)
    return save_teacher_checkpoint(path, model, architecture, num_classes, input_shape, "test", 0.5)


def test_teacher_for_other_classes_or_images(capfd, monkeypatch, tmp_path):
    classes = write_teacher(tmp_path / "three_classes.pt", num_classes=3)
    message = distill_error(capfd, monkeypatch, tmp_path, f"--model.teacher={classes}")
    assert f"teacher checkpoint {classes} has 3 classes but the data has 10" in message
    images = write_teacher(tmp_path / "large_images.pt", input_shape=(1, 28, 28))
    message = distill_error(capfd, monkeypatch, tmp_path, f"--model.teacher={images}")
    assert f"teacher checkpoint {images} takes images of shape (1, 28, 28) but the data gives (1, 8, 8)" in message


def test_teacher_file_missing_truncated_or_not_plain_weights(capfd, monkeypatch, tmp_path):
    missing = tmp_path / "missing.pt"
    message = distill_error(capfd, monkeypatch, tmp_path, f"--model.teacher={missing}")
    assert f"teacher checkpoint {missing} not found" in message
    whole = write_teacher(tmp_path / "whole.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole[: len(whole) // 2])
    message = distill_error(capfd, monkeypatch, tmp_path, f"--model.teacher={truncated}")
    assert f"teacher checkpoint {truncated} is corrupt or not a teacher file" in message
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "distill-teacher/1", "state_dict": {}, "extra": NotPlainWeights()}, pickled)
    message = distill_error(capfd, monkeypatch, tmp_path, f"--model.teacher={pickled}")
    refused = f"{NotPlainWeights.__module__}.NotPlainWeights"
    assert f"teacher checkpoint {pickled} is corrupt or not a teacher file (refuses {refused})" in message


def test_teacher_weights_of_another_architecture(capfd, monkeypatch, tmp_path):
    # A file that says cnn_large but holds cnn_small's weights (renamed, or written by another version).
    path = write_teacher(tmp_path / "mislabelled.pt", architecture="cnn_small")
    payload = torch.load(path, weights_only=True)
    payload["architecture"] = "cnn_large"
    torch.save(payload, path)
    message = distill_error(capfd, monkeypatch, tmp_path, f"--model.teacher={path}")
    assert f"teacher checkpoint {path} does not fit architecture 'cnn_large'" in message


# ----------------------------------------------------------------------------------------- resume checkpoints
@pytest.fixture(scope="module")
def tals_checkpoint(tmp_path_factory) -> Path:
    """A real last.ckpt of a 1-epoch TALS run (mlp_small student)."""
    tmp_path = tmp_path_factory.mktemp("resume_source")
    cli = run_cli(tmp_path, "--trainer.max_epochs=1", "--test_after_fit=false", "--per_sample_statistics=null")
    return Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


def test_resume_checkpoint_missing_truncated_or_not_plain_weights(capfd, monkeypatch, tmp_path, tals_checkpoint):
    missing = tmp_path / "missing.ckpt"
    message = distill_error(capfd, monkeypatch, tmp_path, f"--ckpt_path={missing}")
    assert message.startswith(f"ckpt_path: checkpoint {missing} not found")
    whole = tals_checkpoint.read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole[: len(whole) * 2 // 3])
    message = distill_error(capfd, monkeypatch, tmp_path, f"--ckpt_path={truncated}")
    assert message.startswith(f"ckpt_path: {truncated} is truncated or not a checkpoint")
    pickled = tmp_path / "pickled.ckpt"
    checkpoint = torch.load(tals_checkpoint, weights_only=True)
    torch.save({**checkpoint, "extra": NotPlainWeights()}, pickled)
    message = distill_error(capfd, monkeypatch, tmp_path, f"--ckpt_path={pickled}")
    assert message.startswith(f"ckpt_path: {pickled} is not a plain-weights checkpoint")
    assert f"refuses {NotPlainWeights.__module__}.NotPlainWeights" in message and "never runs pickled code" in message
    teacher = write_teacher(tmp_path / "teacher.pt")
    message = distill_error(capfd, monkeypatch, tmp_path, f"--ckpt_path={teacher}")
    assert message.startswith(f"ckpt_path: {teacher} is not a Lightning training checkpoint")


def test_resume_checkpoint_of_another_student_or_policy(capfd, monkeypatch, tmp_path, tals_checkpoint):
    # Lightning would replace the config's model settings by the checkpoint's silently: they must agree.
    message = distill_error(capfd, monkeypatch, tmp_path, f"--ckpt_path={tals_checkpoint}", "--model.student=mlp_large")
    written = "was written with model.student='mlp_small', but this config gives 'mlp_large'"
    assert message.startswith(f"ckpt_path: {tals_checkpoint} {written}")
    message = distill_error(capfd, monkeypatch, tmp_path, f"--ckpt_path={tals_checkpoint}", config=experiment("kd"))
    assert "was written with model.temperature_policy.class_path='distill.policies.SigmaAnchoredTemperature'" in message
    # A checkpoint without its settings (a module built in Python) is checked by its weights' names and shapes.
    bare = tmp_path / "bare.ckpt"
    torch.save({key: value for key, value in torch.load(tals_checkpoint, weights_only=True).items()
                if key != "hyper_parameters"}, bare)  # fmt: skip
    message = distill_error(capfd, monkeypatch, tmp_path, f"--ckpt_path={bare}", "--model.student=mlp_large")
    assert message.startswith(f"ckpt_path: {bare} is for another architecture or policy: student.layers.1.")
    assert "there but (256" in message
    message = distill_error(capfd, monkeypatch, tmp_path, f"--ckpt_path={bare}", config=experiment("ctkd_global"))
    assert "it lacks temperature_policy.theta" in message


def test_a_model_that_cannot_take_the_images():
    from distill.models import check_model_fits

    class NeedsSixteenPixels(torch.nn.Module):
        def forward(self, images):
            return torch.nn.functional.max_pool2d(images, 16).flatten(1)

    with pytest.raises(DistillError, match=r"model.student \(x\): cannot take the data's images of shape \(1, 8, 8\)"):
        check_model_fits(NeedsSixteenPixels(), 10, (1, 8, 8), "model.student (x)")
    with pytest.raises(DistillError, match=r"gives logits of shape \(64,\) per image but the data has 10 classes"):
        check_model_fits(torch.nn.Flatten(), 10, (1, 8, 8), "model.student (x)")


# The same checks met directly, as the command line reaches them through the classes (one line each, tested above).
CONSTRUCTOR_CASES = [
    ("zero T", lambda: FixedTemperature(T=0.0), "model.temperature_policy.init_args.T: got 0.0, expected a temperature > 0"),
    ("TTM temperature", lambda: TransformedTeacherTemperature(T=-2.0),
     "model.temperature_policy.init_args.T: got -2.0, expected a temperature > 0"),
    ("TTM beta", lambda: TransformedTeacherTemperature(beta=-1.0),
     "model.temperature_policy.init_args.beta: got -1.0, expected a loss weight >= 0"),
    ("CTKD ramp epochs", lambda: CurriculumTemperature(ramp_epochs=-2),
     "model.temperature_policy.init_args.ramp_epochs: got -2, expected a number of epochs >= 0"),
    ("CTKD lowest temperature", lambda: CurriculumTemperature(t_min=0.0),
     "model.temperature_policy.init_args.t_min: got 0.0, expected a lowest temperature > 0"),
    ("CTKD mode", lambda: CurriculumTemperature(mode="batch"),
     "model.temperature_policy.init_args.mode: got 'batch', expected one of 'global', 'instance'"),
    ("grid value", lambda: GridTemperature(values=[2.0, -1.0]),
     "model.temperature_policy.init_args.values: got -1.0, expected temperatures > 0"),
    ("TALS alpha", lambda: SigmaAnchoredTemperature(alpha_fn=0.5),
     "model.temperature_policy.init_args.alpha_fn: got 0.5, expected a function sigma [B] -> alpha [B]"),
    ("DKD warm-up", lambda: DKD(warmup=-1), "model.divergence.init_args.warmup: got -1, expected a number of epochs >= 0"),
    ("DKD beta", lambda: DKD(beta=-8.0), "model.divergence.init_args.beta: got -8.0, expected a loss weight >= 0"),
    ("window length", lambda: PerSampleStatistics(every_n_steps=-3),
     "per_sample_statistics.init_args.every_n_steps: got -3, expected a number of steps (0: no windows) >= 0"),
    ("digits test share", lambda: DigitsDataModule(test_fraction=0.0),
     "data.init_args.test_fraction: got 0.0, expected a share of the data strictly between 0 and 1"),
    ("NaN weight", lambda: FixedTemperature(ce_weight=float("nan")),
     "model.temperature_policy.init_args.ce_weight: got nan, expected a loss weight >= 0 (a finite number)"),
    ("infinite weight", lambda: MaxLogitTemperature(kd_weight=float("inf")),
     "model.temperature_policy.init_args.kd_weight: got inf, expected a loss weight >= 0 (a finite number)"),
    ("a bool as a weight", lambda: FixedTemperature(kd_weight=True),
     "model.temperature_policy.init_args.kd_weight: got True, expected a loss weight >= 0 (a finite number)"),
]


@pytest.mark.parametrize("build, expected", [case[1:] for case in CONSTRUCTOR_CASES],
                         ids=[case[0] for case in CONSTRUCTOR_CASES])
def test_constructor_refuses(build, expected):
    with pytest.raises(DistillError) as error:
        build()
    assert str(error.value).startswith(expected), str(error.value)


@pytest.mark.parametrize("settings, expected", [
    ({"trainer.max_epochs": -5}, "trainer.max_epochs: got -5, expected a number of epochs >= 1 (or -1: no limit)"),
    ({"trainer.max_steps": 0}, "trainer.max_steps: got 0, expected a number of steps >= 1 (or -1: no limit)"),
    ({"checkpoint_every_n_steps": -1}, "checkpoint_every_n_steps: got -1, expected a number of steps >= 0"),
], ids=["negative epochs", "zero steps", "step checkpoint interval"])  # fmt: skip
def test_run_values_refused(settings, expected):
    from distill.cli_errors import check_run_values

    with pytest.raises(DistillError) as error:
        check_run_values(settings)
    assert str(error.value).startswith(expected)
    check_run_values({"trainer.max_epochs": -1, "trainer.max_steps": 100, "checkpoint_every_n_steps": 0})  # accepted


# ----------------------------------------------------------------------------------------- from Python
def test_module_and_data_disagreeing_on_classes_or_image_shape(tmp_path):
    for settings in ({"num_classes": 3}, {"input_shape": (1, 4, 16)}):
        module = DistillationModule(teacher=None, **settings)
        trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
        with pytest.raises(DistillError, match=r"model\.(num_classes|input_shape): the models were built for"):
            trainer.fit(module, DigitsDataModule())
