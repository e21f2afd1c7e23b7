"""The published CRD/mdistiller CIFAR-100 teachers: registry, lookup, weights-only loading, errors, teacher-check.

The real files cannot be downloaded here; every test writes files in their on-disk format
(``{"epoch", "model": state_dict, "accuracy", "optimizer"}``, saved by ``torch.save``) itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import zipfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from distill.data import IndexedTensorDataset
from distill.errors import DistillError
from distill.models import available, create
from teachers import TEACHERS, ExportTeacher, TeacherEntry, load_teacher, save_teacher_checkpoint
from teachers.check import build_data_module, main, measure_teacher
from teachers.registry import PUBLISHED, TORCHVISION

EXPECTED = {
    "resnet56": 72.34, "resnet110": 74.31, "resnet32x4": 79.42, "wrn_40_2": 75.61, "vgg13": 74.64, "ResNet50": 79.34,
}  # fmt: skip
CIFAR = (3, 32, 32)


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """``$DISTILL_TEACHER_DIR`` and ``teachers/checkpoints`` as two empty temporary folders."""
    teacher_dir, checkpoint_dir = tmp_path / "teacher_dir", tmp_path / "checkpoints"
    teacher_dir.mkdir()
    checkpoint_dir.mkdir()
    monkeypatch.setenv("DISTILL_TEACHER_DIR", str(teacher_dir))
    monkeypatch.setattr("teachers.registry.CHECKPOINT_DIR", checkpoint_dir)
    return teacher_dir, checkpoint_dir


def published_payload(architecture: str, accuracy=72.34, seed: int = 0, **extra) -> tuple[dict, dict]:
    """A file's content as CRD's training script saved it: random weights, an SGD state with momentum."""
    torch.manual_seed(seed)
    model = create(architecture, num_classes=100, input_shape=CIFAR)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.01 * torch.randn_like(tensor))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for parameter in model.parameters():
        optimizer.state[parameter]["momentum_buffer"] = torch.randn_like(parameter)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    return {"epoch": 240, "model": state, "accuracy": accuracy, "optimizer": optimizer.state_dict(), **extra}, state


def write_published(folder: Path, architecture: str, payload: dict) -> Path:
    path = folder / "cifar_teachers" / f"{architecture}_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def with_numpy1_names(path: Path) -> None:
    """Rewrite a torch file's pickle as NumPy 1 (2019) named its scalar: ``numpy.core.multiarray.scalar``."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    pickle_name = next(name for name in members if name.endswith("/data.pkl"))
    assert b"numpy._core.multiarray\nscalar" in members[pickle_name]
    members[pickle_name] = members[pickle_name].replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_registry_lists_the_published_teachers_as_published():
    for architecture, accuracy in EXPECTED.items():
        entry = TEACHERS[f"{architecture}_cifar100"]
        assert entry.architecture == architecture and architecture in available()
        assert entry.file_format == PUBLISHED and entry.config is None
        assert entry.checkpoint == f"cifar_teachers/{architecture}_vanilla/ckpt_epoch_240.pth"
        assert entry.test_accuracy == pytest.approx(accuracy / 100)
        assert (entry.num_classes, entry.input_shape) == (100, CIFAR)
        assert entry.dataset == "distill.data.CIFAR100DataModule"
        assert "cifar_teachers.tar" in entry.source and "github.com/megvii-research/mdistiller" in entry.source


def test_a_published_file_loads_strict_from_the_teacher_dir(folders):
    payload, state = published_payload("resnet56")
    write_published(folders[0], "resnet56", payload)
    teacher = load_teacher("resnet56_cifar100", 100, CIFAR)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    loaded = teacher.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[key], value) for key, value in state.items())
    reference = create("resnet56", num_classes=100, input_shape=CIFAR)
    reference.load_state_dict(state, strict=True)
    images = torch.randn(2, *CIFAR)
    with torch.no_grad():
        assert torch.equal(teacher(images), reference.eval()(images))


@pytest.mark.parametrize(
    "accuracy",
    ["float", "tensor", "numpy_float64", "numpy_float64_numpy1_name", "numpy_float32", "options_namespace"],
)
def test_the_data_types_of_published_files_load_weights_only(folders, accuracy):
    """CRD's script stored the accuracy as whatever its meter held; 2019 files may hold NumPy scalars
    (named as NumPy 1 named them) and an argparse Namespace of options: all load, weights-only."""
    value = {
        "float": 72.34,
        "tensor": torch.tensor([72.34]),
        "numpy_float64": np.float64(72.34),
        "numpy_float64_numpy1_name": np.float64(72.34),
        "numpy_float32": np.float32(72.34),
        "options_namespace": 72.34,
    }[accuracy]
    extra = {"opt": argparse.Namespace(model="resnet8", learning_rate=0.05, lr_decay_epochs=[150, 180, 210])}
    payload, state = published_payload("resnet8", value, **(extra if accuracy == "options_namespace" else {}))
    path = write_published(folders[0], "resnet8", payload)
    if accuracy == "numpy_float64_numpy1_name":
        with_numpy1_names(path)
    entry = dataclasses.replace(TEACHERS["resnet56_cifar100"], name="tiny", architecture="resnet8",
                                checkpoint="cifar_teachers/resnet8_vanilla/ckpt_epoch_240.pth")  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(TEACHERS, "tiny", entry)
        teacher = load_teacher("tiny", 100, CIFAR)
    assert all(torch.equal(teacher.state_dict()[key], value) for key, value in state.items())


def test_lookup_order_teacher_dir_then_checkpoints(folders, monkeypatch):
    teacher_dir, checkpoint_dir = folders
    write_published(checkpoint_dir, "resnet56", published_payload("resnet56", seed=1)[0])
    from_checkpoints = load_teacher("resnet56_cifar100", 100, CIFAR).state_dict()
    _, preferred = published_payload("resnet56", seed=2)
    write_published(teacher_dir, "resnet56", published_payload("resnet56", seed=2)[0])
    from_teacher_dir = load_teacher("resnet56_cifar100", 100, CIFAR).state_dict()
    assert torch.equal(from_teacher_dir["fc.weight"], preferred["fc.weight"])
    assert not torch.equal(from_checkpoints["fc.weight"], from_teacher_dir["fc.weight"])
    monkeypatch.delenv("DISTILL_TEACHER_DIR")
    fallback = load_teacher("resnet56_cifar100", 100, CIFAR).state_dict()
    assert torch.equal(fallback["fc.weight"], from_checkpoints["fc.weight"])


def test_a_missing_file_says_where_it_goes_and_where_it_comes_from(folders):
    teacher_dir, checkpoint_dir = folders
    with pytest.raises(DistillError) as error:
        load_teacher("resnet32x4_cifar100", 100, CIFAR)
    message = one_line(error)
    relative = "cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth"
    assert str(teacher_dir / relative) in message and str(checkpoint_dir / relative) in message
    assert "cifar_teachers.tar" in message and "https://github.com/megvii-research/mdistiller/releases" in message
    assert "tar xf cifar_teachers.tar -C" in message


def _damage(path: Path, damage: str) -> None:
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:4096])
    elif damage == "another_architecture":
        torch.save(published_payload("resnet20")[0], path)
    elif damage == "pickled_code":
        torch.save({**published_payload("resnet56")[0], "hook": write_published}, path)
    elif damage == "numpy_array":  # an ndarray needs numpy's array reconstructor: not a type allowed here
        torch.save({**published_payload("resnet56")[0], "accuracy": np.array([72.34])}, path)
    elif damage == "no_model_key":
        torch.save(create("resnet56", 100, CIFAR).state_dict(), path)


@pytest.mark.parametrize("damage", ["truncated", "another_architecture", "pickled_code", "numpy_array", "no_model_key"])
def test_a_bad_published_file_is_one_clear_error(folders, damage):
    path = write_published(folders[0], "resnet56", published_payload("resnet56")[0])
    _damage(path, damage)
    with pytest.raises(DistillError) as error:
        load_teacher("resnet56_cifar100", 100, CIFAR)
    message = one_line(error)
    assert str(path) in message and "cifar_teachers.tar" in message
    expected = {
        "truncated": "corrupt",
        "another_architecture": "does not fit architecture 'resnet56'",
        "pickled_code": "refuses tests.test_published_teachers.write_published",
        "numpy_array": "refuses numpy",
        "no_model_key": "no 'model' state_dict",
    }[damage]
    assert expected in message


@pytest.mark.parametrize(
    ("num_classes", "input_shape", "expected"), [(10, CIFAR, "100 classes"), (100, (1, 28, 28), "(3, 32, 32)")]
)
def test_a_published_teacher_must_fit_the_data(folders, num_classes, input_shape, expected):
    write_published(folders[0], "resnet56", published_payload("resnet56")[0])
    with pytest.raises(DistillError) as error:
        load_teacher("resnet56_cifar100", num_classes, input_shape)
    assert expected in one_line(error)


def test_published_teachers_are_not_exported_over():
    with pytest.raises(DistillError, match="published teacher"):
        ExportTeacher(name="resnet56_cifar100")


def test_exported_teachers_go_to_the_teacher_dir_when_it_is_set(folders):
    assert ExportTeacher(name="digits_cnn").path == folders[0] / "digits_cnn.pt"


# -- make teacher-check ----------------------------------------------------------------------------


class RandomCifarDataModule(L.LightningDataModule):
    """100 random 3x32x32 test images in a folder-free module that takes a ``data_dir`` (like CIFAR-100's)."""

    num_classes = 100
    input_shape = [3, 32, 32]

    def __init__(self, data_dir: str = "unset", batch_size: int = 64):
        super().__init__()
        self.data_dir = data_dir
        self.batch_size = batch_size
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(100, *CIFAR, generator=generator)
        self.test = IndexedTensorDataset(images, torch.randint(0, 100, (100,), generator=generator))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test, batch_size=self.batch_size)


def test_teacher_check_measures_the_shipped_digits_teacher(capsys, digits):
    assert main(["digits_cnn", "--device=cpu"]) == 0
    out, err = capsys.readouterr()
    assert "test top-1 99.72% on 360 images, expected 99.72%" in out and err == ""


def test_teacher_check_warns_one_line_when_more_than_a_point_below(capsys, monkeypatch):
    entry = TEACHERS["digits_cnn"]
    monkeypatch.setitem(TEACHERS, "digits_cnn", dataclasses.replace(entry, test_accuracy=0.9972 + 0.0099))
    assert main(["digits_cnn"]) == 0
    assert capsys.readouterr().err == "", "0.99 points below is within the tolerance"
    monkeypatch.setitem(TEACHERS, "digits_cnn", dataclasses.replace(entry, test_accuracy=0.9972 + 0.0101))
    assert main(["digits_cnn"]) == 0
    out, err = capsys.readouterr()
    assert "99.72%" in out
    assert err.count("\n") == 1
    assert err.startswith("warning: teacher digits_cnn is 1.01 points below its expected 100.73%")


def test_teacher_check_runs_a_published_teacher_on_its_data_module(folders, monkeypatch, capsys):
    payload, state = published_payload("resnet8")
    write_published(folders[0], "resnet8", payload)
    entry = TeacherEntry(
        name="resnet8_random", architecture="resnet8", dataset=f"{__name__}.RandomCifarDataModule",
        checkpoint="cifar_teachers/resnet8_vanilla/ckpt_epoch_240.pth", num_classes=100, input_shape=CIFAR,
        test_accuracy=0.5, file_format=PUBLISHED, source="a test",
    )  # fmt: skip
    monkeypatch.setitem(TEACHERS, entry.name, entry)
    monkeypatch.setenv("DISTILL_DATA_DIR", "/from/the/environment")
    check = measure_teacher(entry.name, batch_size=32, device="cpu")
    data = RandomCifarDataModule()
    model = create("resnet8", 100, CIFAR)
    model.load_state_dict(state)
    with torch.no_grad():
        expected = (model.eval()(data.test.images).argmax(1) == data.test.labels).float().mean().item()
    assert check.images == 100 and check.accuracy == pytest.approx(expected, abs=1e-6)
    assert check.below_expected
    assert build_data_module(entry.dataset).data_dir == "/from/the/environment"
    assert build_data_module(entry.dataset, data_dir="/given").data_dir == "/given"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["nope"], "unknown teacher 'nope'"),
        (["digits_cnn", "--data_dir=/x"], "takes no data_dir"),
        (["resnet56_cifar100"], "not found (teacher 'resnet56_cifar100')"),
    ],
)
def test_teacher_check_user_errors_are_one_line_and_status_2(capsys, monkeypatch, tmp_path, argv, expected):
    if argv == ["resnet56_cifar100"]:  # no file; and a stand-in for CIFAR-100's data module, which needs files
        monkeypatch.setenv("DISTILL_TEACHER_DIR", str(tmp_path))
        monkeypatch.setattr("teachers.registry.CHECKPOINT_DIR", tmp_path)
        stand_in = dataclasses.replace(TEACHERS["resnet56_cifar100"], dataset=f"{__name__}.RandomCifarDataModule")
        monkeypatch.setitem(TEACHERS, "resnet56_cifar100", stand_in)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("distill-teacher-check: error:") and expected in err


def test_a_data_module_that_cannot_be_imported():
    with pytest.raises(DistillError, match="cannot be imported"):
        build_data_module("distill.data.NoSuchDataModule")


# -- torchvision's ImageNet weights and teachers made here without a known accuracy -----------------------------------


def test_the_torchvision_resnet34_entry():
    entry = TEACHERS["imagenet_resnet34_torchvision"]
    assert (entry.architecture, entry.num_classes, entry.input_shape) == ("imagenet_resnet34", 1000, (3, 224, 224))
    assert entry.file_format == TORCHVISION and entry.downloaded
    assert entry.test_accuracy == pytest.approx(0.7331, abs=1e-4)
    assert entry.checkpoint == "imagenet/resnet34-b627a593.pth"
    assert entry.source.startswith("https://download.pytorch.org/models/resnet34-b627a593.pth")


def small_torchvision_entry() -> TeacherEntry:
    """The torchvision entry with a small architecture (the reader does not depend on it), so the files stay small."""
    return dataclasses.replace(TEACHERS["imagenet_resnet34_torchvision"], name="tiny_torchvision",
                               architecture="resnet8", num_classes=100, input_shape=CIFAR)  # fmt: skip


@pytest.mark.parametrize("zipfile_format", [True, False], ids=["zip", "legacy"])
def test_a_torchvision_file_loads_strict_and_weights_only(folders, monkeypatch, zipfile_format):
    """torchvision's files are plain state_dicts, in either of torch's formats (older releases used the legacy one)."""
    entry = small_torchvision_entry()
    monkeypatch.setitem(TEACHERS, entry.name, entry)
    state = create("resnet8", 100, CIFAR).state_dict()
    path = folders[0] / entry.checkpoint
    path.parent.mkdir(parents=True)
    torch.save(state, path, _use_new_zipfile_serialization=zipfile_format)
    teacher = load_teacher(entry.name, 100, CIFAR)
    assert all(torch.equal(teacher.state_dict()[key], value) for key, value in state.items())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("damage", ["missing", "pickled_code", "crd_layout", "another_architecture"])
def test_a_bad_torchvision_file_is_one_line_saying_where_to_get_it(folders, monkeypatch, damage):
    entry = small_torchvision_entry()
    monkeypatch.setitem(TEACHERS, entry.name, entry)
    path = folders[0] / entry.checkpoint
    path.parent.mkdir(parents=True)
    state = create("resnet8", 100, CIFAR).state_dict()
    if damage == "pickled_code":
        torch.save({**state, "hook": write_published}, path)
    elif damage == "crd_layout":
        torch.save({"epoch": 240, "model": state}, path)
    elif damage == "another_architecture":
        torch.save(create("resnet20", 100, CIFAR).state_dict(), path)
    with pytest.raises(DistillError) as error:
        load_teacher(entry.name, 100, CIFAR)
    message = one_line(error)
    assert "https://download.pytorch.org/models/resnet34-b627a593.pth" in message
    assert f"$DISTILL_TEACHER_DIR/{entry.checkpoint}" in message
    expected = {
        "missing": f"{folders[0] / entry.checkpoint} or {folders[1] / entry.checkpoint} not found",
        "pickled_code": "refuses tests.test_published_teachers.write_published",
        "crd_layout": "not a torchvision weights file",
        "another_architecture": "does not fit architecture 'resnet8'",
    }[damage]
    assert expected in message


def test_downloaded_teachers_are_not_exported_over():
    with pytest.raises(DistillError, match="published teacher"):
        ExportTeacher(name="imagenet_resnet34_torchvision")
    assert ExportTeacher(name="ResNet34_cifar100").path.name == "ResNet34_cifar100.pt"


def test_teacher_check_of_a_teacher_without_a_registered_accuracy_uses_the_files(folders, monkeypatch, capsys):
    """``ResNet34_cifar100`` (the TALS teacher) is made here; its expected accuracy is what its file recorded."""
    entry = dataclasses.replace(TEACHERS["ResNet34_cifar100"], architecture="resnet8",
                                dataset=f"{__name__}.RandomCifarDataModule")  # fmt: skip
    assert TEACHERS["ResNet34_cifar100"].test_accuracy is None and entry.how_to_make == (
        "make teacher NAME=ResNet34_cifar100 DATA=cifar100")
    monkeypatch.setitem(TEACHERS, entry.name, entry)
    save_teacher_checkpoint(folders[0] / entry.checkpoint, create("resnet8", 100, CIFAR), "resnet8", 100, CIFAR,
                            entry.dataset, 0.8)  # fmt: skip
    check = measure_teacher(entry.name, batch_size=50, device="cpu")
    assert check.expected == pytest.approx(0.8) and check.below_expected
    assert check.report().endswith("expected 80.00% (recorded in the file when it was made)")
    assert main([entry.name, "--device=cpu"]) == 0
    assert capsys.readouterr().err.startswith("warning: teacher ResNet34_cifar100 is ")
