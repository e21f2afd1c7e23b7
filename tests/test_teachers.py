"""The teacher zoo: the shipped checkpoint, weights_only loading and one-line errors for bad files."""

from __future__ import annotations

import pytest
import torch

from distill.errors import DistillError
from distill.models import create
from teachers import TEACHERS, load_teacher, read_teacher_checkpoint, save_teacher_checkpoint

DIGITS = TEACHERS["digits_cnn"]


def test_shipped_digits_teacher_is_small_and_as_accurate_as_registered(digits):
    assert DIGITS.path.is_file() and DIGITS.path.stat().st_size < 1_000_000
    teacher = load_teacher("digits_cnn", 10, (1, 8, 8))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    test = digits.datasets["test"]
    with torch.no_grad():
        accuracy = (teacher(test.images).argmax(-1) == test.labels).float().mean().item()
    assert accuracy == pytest.approx(DIGITS.test_accuracy, abs=1e-3)
    payload = read_teacher_checkpoint(DIGITS.path, DIGITS.how_to_make)
    assert payload["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def _write(tmp_path, architecture="cnn_large", num_classes=10, input_shape=(1, 8, 8)):
    model = create(architecture, num_classes=num_classes, input_shape=input_shape)
    return save_teacher_checkpoint(tmp_path / "t.pt", model, architecture, num_classes, input_shape, "test", 0.5)


def test_round_trip_of_a_saved_teacher(tmp_path):
    path = _write(tmp_path)
    teacher = load_teacher(str(path), 10, (1, 8, 8))
    assert isinstance(teacher, torch.nn.Module)
    assert not list(tmp_path.glob("*.tmp")), "the atomic write left a temporary file"


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_checkpoint_names_the_file_and_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setattr("teachers.registry.CHECKPOINT_DIR", tmp_path)
    with pytest.raises(DistillError) as error:
        load_teacher("digits_cnn", 10, (1, 8, 8))
    message = _one_line(error)
    assert str(tmp_path / "digits_cnn.pt") in message and "make teacher NAME=digits_cnn DATA=digits" in message


def test_checkpoint_of_another_architecture(tmp_path, monkeypatch):
    _write(tmp_path, architecture="cnn_small").rename(tmp_path / "digits_cnn.pt")
    monkeypatch.setattr("teachers.registry.CHECKPOINT_DIR", tmp_path)
    with pytest.raises(DistillError) as error:
        load_teacher("digits_cnn", 10, (1, 8, 8))
    assert "'cnn_small'" in _one_line(error) and "'cnn_large'" in str(error.value)


def test_checkpoint_for_another_number_of_classes(tmp_path):
    path = _write(tmp_path, num_classes=5)
    with pytest.raises(DistillError) as error:
        load_teacher(str(path), 10, (1, 8, 8))
    assert str(path) in _one_line(error) and "5 classes" in str(error.value) and "10" in str(error.value)


def test_checkpoint_for_another_image_shape(tmp_path):
    path = _write(tmp_path, input_shape=(1, 28, 28))
    with pytest.raises(DistillError) as error:
        load_teacher(str(path), 10, (1, 8, 8))
    assert "(1, 28, 28)" in _one_line(error)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickled_code", "plain_state_dict"])
def test_corrupt_or_foreign_checkpoint(tmp_path, damage):
    path = _write(tmp_path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif damage == "pickled_code":
        torch.save({"format": "distill-teacher/1", "hook": _write}, path)  # a function: needs pickled code
    else:
        torch.save(create("cnn_large", 10, (1, 8, 8)).state_dict(), path)
    with pytest.raises(DistillError) as error:
        load_teacher(str(path), 10, (1, 8, 8))
    message = _one_line(error)
    assert str(path) in message and "make teacher" in message


def test_unknown_teacher_name():
    with pytest.raises(DistillError, match="unknown teacher 'nope'.*digits_cnn"):
        load_teacher("nope", 10, (1, 8, 8))


def test_a_teacher_trained_here_goes_where_it_is_looked_up_first(tmp_path, monkeypatch):
    """`make teacher` with $DISTILL_TEACHER_DIR set writes there (never over the shipped file), and
    the registry name then loads that new file."""
    from tests.conftest import REPO, run_cli

    shipped = DIGITS.path.read_bytes()
    monkeypatch.setenv("DISTILL_TEACHER_DIR", str(tmp_path / "teachers"))
    run_cli(tmp_path, "--trainer.max_epochs=1", config=REPO / "configs" / "teachers" / "digits_cnn.yaml")
    written = tmp_path / "teachers" / "digits_cnn.pt"
    assert written.is_file() and DIGITS.path == written
    assert (REPO / "teachers" / "checkpoints" / "digits_cnn.pt").read_bytes() == shipped
    payload = read_teacher_checkpoint(written, DIGITS.how_to_make)
    teacher = load_teacher("digits_cnn", 10, (1, 8, 8))
    assert all(torch.equal(teacher.state_dict()[key], value) for key, value in payload["state_dict"].items())
