"""CIFAR-100 from fake files in the official format: reading, the validation split, both paths, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from distill.data import CIFAR100DataModule
from distill.data.normalization import CIFAR100_MEAN, CIFAR100_STD, normalize
from distill.errors import DistillError
from tests.fake_data import python2_pickle, random_cifar100, write_cifar100


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    random_cifar100(root, train=1000, test=200)
    return root


def test_reads_the_official_format_and_holds_out_a_stratified_validation_split(cifar_dir):
    data = CIFAR100DataModule(data_dir=str(cifar_dir), val_size=200, split_seed=3)
    assert data.num_classes == 100 and data.input_shape == [3, 32, 32]  # set before any file is read
    data.setup("fit")
    train, val, test = (data.datasets[split] for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (800, 200, 200)
    assert torch.equal(torch.bincount(val.labels, minlength=100), torch.full((100,), 2))  # 2 of each class's 10
    assert data.class_names[:2] == ["class_0", "class_1"] and len(data.class_names) == 100
    # Rows are R, G, B planes of 32x32: the file's row k is image k, exactly.
    with (cifar_dir / "cifar-100-python" / "test").open("rb") as file:
        raw = pickle.load(file, encoding="latin1")
    assert torch.equal(test.images.reshape(200, 3072), torch.from_numpy(raw["data"]))
    # Train and val are disjoint and together the whole training file.
    rows = torch.cat([train.images, val.images]).reshape(1000, -1)
    assert len({tuple(row.tolist()) for row in rows}) == 1000
    again = CIFAR100DataModule(data_dir=str(cifar_dir), val_size=200, split_seed=3)
    again.setup("fit")
    assert torch.equal(again.datasets["val"].images, val.images)


def test_val_size_zero_trains_on_everything_and_skips_validation(cifar_dir):
    data = CIFAR100DataModule(data_dir=str(cifar_dir), val_size=0)
    data.setup("fit")
    assert len(data.datasets["train"]) == 1000 and len(data.datasets["val"]) == 0
    assert data.val_dataloader() == []


@pytest.mark.parametrize("augmentation", ["tensor", "torchvision"])
def test_batches_and_evaluation_images(cifar_dir, augmentation):
    data = CIFAR100DataModule(data_dir=str(cifar_dir), batch_size=64, val_size=100, augmentation=augmentation, num_workers=0)
    data.setup("fit")
    seen = []
    for images, labels, index in data.train_dataloader():
        assert images.dtype == torch.float32 and images.shape[1:] == (3, 32, 32)
        assert torch.equal(labels, data.datasets["train"].labels[index])
        seen.append(index)
    assert sorted(torch.cat(seen).tolist()) == list(range(900))
    # Evaluation: no augmentation, normalised with the CIFAR-100 mean and std, in order.
    images, labels, index = next(iter(data.test_dataloader()))
    assert index.tolist() == list(range(64))
    assert torch.equal(images, normalize(data.datasets["test"].images[:64], CIFAR100_MEAN, CIFAR100_STD))
    assert data.has_random_augmentation


def test_random_augmentation_has_no_train_inputs(cifar_dir):
    data = CIFAR100DataModule(data_dir=str(cifar_dir))
    with pytest.raises(DistillError, match="randomly augmented"):
        data.train_inputs()


def test_missing_folder_is_one_line_naming_folder_files_and_how_to_get_them(tmp_path):
    data = CIFAR100DataModule(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DistillError) as error:
        data.setup("fit")
    message = str(error.value)
    assert "\n" not in message
    for part in (str(tmp_path / "nowhere" / "cifar-100-python"), "train, test, meta", "cifar-100-python.tar.gz",
                 "--data.download=true"):  # fmt: skip
        assert part in message


def test_download_is_not_attempted_when_the_files_are_there(cifar_dir, monkeypatch):
    import torchvision.datasets

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", no_network)
    data = CIFAR100DataModule(data_dir=str(cifar_dir), val_size=100, download=True)
    data.prepare_data()
    data.setup("fit")
    assert len(data.datasets["test"]) == 200


def write_folder_with(tmp_path, name: str, content: bytes):
    random_cifar100(tmp_path, train=100, test=100)
    (tmp_path / "cifar-100-python" / name).write_bytes(content)
    return CIFAR100DataModule(data_dir=str(tmp_path), val_size=0)


def test_truncated_file_is_one_line(tmp_path):
    whole = (random_cifar100(tmp_path / "whole", train=100, test=100) / "train").read_bytes()
    data = write_folder_with(tmp_path, "train", whole[: len(whole) // 2])
    with pytest.raises(DistillError, match=r"cifar-100-python/train: not a readable CIFAR-100 file .*replace it") as error:
        data.setup("fit")
    assert "\n" not in str(error.value)


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    data = write_folder_with(tmp_path, "test", pickle.dumps({"data": Payload()}, protocol=2))
    with pytest.raises(DistillError, match=r"refusing to load (__builtin__|builtins)\.print"):
        data.setup("fit")
    assert "must never run" not in capsys.readouterr().out


def test_wrong_content_is_named(tmp_path):
    data = write_folder_with(tmp_path, "train", python2_pickle({"data": np.zeros((4, 100), np.uint8), "fine_labels": [0] * 4}))
    with pytest.raises(DistillError, match=r"'data' must be a uint8 array \[N, 3072\], found uint8 \(4, 100\)"):
        data.setup("fit")
    images = np.zeros((4, 3, 32, 32), np.uint8)
    write_cifar100(tmp_path, images, np.array([0, 1, 2, 100]), images, np.arange(4))
    with pytest.raises(DistillError, match=r"'fine_labels' must hold 4 labels in 0..99"):
        CIFAR100DataModule(data_dir=str(tmp_path), val_size=0).setup("fit")


def test_bad_arguments_are_one_line(cifar_dir):
    with pytest.raises(DistillError, match="augmentation='pil': expected 'tensor'"):
        CIFAR100DataModule(augmentation="pil")
    data = CIFAR100DataModule(data_dir=str(cifar_dir), val_size=999)
    with pytest.raises(DistillError, match=r"val_size=999: expected 0 or a number from 100 .* to 900"):
        data.setup("fit")
