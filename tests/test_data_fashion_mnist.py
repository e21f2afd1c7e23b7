"""Fashion-MNIST from idx and idx.gz files: where the files are found, the subsets, train_inputs, errors."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

import distill.data.fashion_mnist as fashion_mnist
from distill.data import DigitsDataModule, FashionMNISTDataModule
from distill.data.idx import read_idx
from distill.data.normalization import FASHION_MNIST_MEAN, FASHION_MNIST_STD, normalize
from distill.errors import DistillError
from tests.fake_data import idx_bytes, random_fashion_mnist


@pytest.fixture
def no_system_copy(monkeypatch, tmp_path):
    """Pretend the Debian package is not installed."""
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "not-installed")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_plain_or_gzipped(tmp_path, gz):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(idx_bytes(array)) if gz else idx_bytes(array))
    assert np.array_equal(read_idx(path, "fix"), array)


def test_truncated_and_foreign_idx_files_are_one_line(tmp_path):
    raw = idx_bytes(np.zeros((5, 28, 28), np.uint8))
    for name, content, message in (
        ("short", raw[:-10], r"truncated or corrupt idx file \(3926 bytes, expected 3936\); fix it"),
        ("short.gz", gzip.compress(raw)[:-20], r"cannot read it .*; fix it"),
        ("float", bytes([0, 0, 0x0D, 1]) + raw[4:], r"not an idx file of unsigned bytes \(header 00000d01\)"),
    ):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DistillError, match=message) as error:
            read_idx(tmp_path / name, "fix it")
        assert str(tmp_path / name) in str(error.value) and "\n" not in str(error.value)


def test_reads_data_dir_with_split_and_per_class_subset(tmp_path, no_system_copy):
    random_fashion_mnist(tmp_path, train=600, test=50, gz=False)
    data = FashionMNISTDataModule(data_dir=str(tmp_path), val_size=100, train_per_class=20, split_seed=1)
    assert data.num_classes == 10 and data.input_shape == [1, 28, 28]
    data.setup("fit")
    train, val, test = (data.datasets[split] for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (200, 100, 50)
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 20))
    assert torch.equal(torch.bincount(val.labels), torch.full((10,), 10))
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 28, 28)
    # The validation split does not depend on train_per_class, and the subsets are nested.
    bigger = FashionMNISTDataModule(data_dir=str(tmp_path), val_size=100, train_per_class=40, split_seed=1)
    bigger.setup("fit")
    assert torch.equal(bigger.datasets["val"].images, val.images)
    rows = {tuple(image.flatten().tolist()) for image in bigger.datasets["train"].images}
    assert all(tuple(image.flatten().tolist()) in rows for image in train.images)
    with pytest.raises(DistillError, match=r"train_per_class=60: expected 1 to 50"):
        FashionMNISTDataModule(data_dir=str(tmp_path), val_size=100, train_per_class=60).setup("fit")


def test_train_inputs_are_exactly_what_the_training_batches_deliver(tmp_path, no_system_copy):
    random_fashion_mnist(tmp_path, train=300, test=20)
    data = FashionMNISTDataModule(data_dir=str(tmp_path), batch_size=32, val_size=50)
    assert not data.has_random_augmentation
    inputs = data.train_inputs()
    assert inputs.shape == (250, 1, 28, 28) and inputs.dtype == torch.float32
    assert torch.equal(inputs, normalize(data.datasets["train"].images, FASHION_MNIST_MEAN, FASHION_MNIST_STD))
    count = 0
    for images, labels, index in data.train_dataloader():
        assert torch.equal(images, inputs[index])  # bit for bit
        count += len(index)
    assert count == 250
    augmented = FashionMNISTDataModule(data_dir=str(tmp_path), val_size=50, augmentation=True)
    assert augmented.has_random_augmentation
    augmented.setup("fit")
    images, _, index = next(iter(augmented.train_dataloader()))
    assert images.shape[1:] == (1, 28, 28) and not torch.equal(images, inputs[index])


def test_digits_train_inputs_match_its_batches():
    data = DigitsDataModule(batch_size=64)
    inputs = data.train_inputs()
    assert torch.equal(inputs, data.datasets["train"].images)
    for images, _, index in data.train_dataloader():
        assert torch.equal(images, inputs[index])


def test_data_dir_comes_first_then_the_debian_location(tmp_path, monkeypatch):
    mine = random_fashion_mnist(tmp_path / "mine", train=20, test=10, seed=1)
    system = random_fashion_mnist(tmp_path / "system", train=30, test=10, seed=2)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", system)
    picked = FashionMNISTDataModule(data_dir=str(mine), val_size=0)
    picked.setup("fit")
    assert len(picked.datasets["train"]) == 20
    fallback = FashionMNISTDataModule(val_size=0)  # no data_dir: the Debian package's folder
    fallback.setup("fit")
    assert len(fallback.datasets["train"]) == 30
    torchvision_layout = random_fashion_mnist(tmp_path / "dl" / "FashionMNIST" / "raw", train=40, test=10, gz=False)
    assert torchvision_layout.is_dir()
    downloaded = FashionMNISTDataModule(data_dir=str(tmp_path / "dl"), val_size=0)
    downloaded.setup("fit")
    assert len(downloaded.datasets["train"]) == 40


def test_downloaded_files_are_found_by_every_rank_without_downloading_again(tmp_path, monkeypatch, no_system_copy):
    """With download=True and no data_dir, torchvision's download folder (data/FashionMNIST/raw) is searched,
    so ranks that did not run prepare_data find the files too."""
    import torchvision.datasets

    monkeypatch.setattr(fashion_mnist, "DOWNLOAD_DIR", str(tmp_path / "data"))
    random_fashion_mnist(tmp_path / "data" / "FashionMNIST" / "raw", train=20, test=10)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", lambda *args, **kwargs: pytest.fail("tried to download"))
    data = FashionMNISTDataModule(val_size=0, download=True)
    data.prepare_data()
    data.setup("fit")
    assert len(data.datasets["train"]) == 20


def test_without_data_the_error_names_all_three_ways(tmp_path, no_system_copy):
    data = FashionMNISTDataModule(data_dir=str(tmp_path / "empty"))
    with pytest.raises(DistillError) as error:
        data.setup("fit")
    message = str(error.value)
    assert "\n" not in message
    for part in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", str(tmp_path / "empty"), "--data.data_dir=",
                 "apt-get install dataset-fashion-mnist", "--data.download=true"):  # fmt: skip
        assert part in message


def test_truncated_file_in_the_data_set_is_named(tmp_path, no_system_copy):
    folder = random_fashion_mnist(tmp_path, train=20, test=10)
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-3]))
    with pytest.raises(DistillError, match=r"train-labels-idx1-ubyte.gz: truncated or corrupt idx file.*reinstall"):
        FashionMNISTDataModule(data_dir=str(folder), val_size=0).setup("fit")


@pytest.mark.skipif(not (fashion_mnist.SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist not installed")
def test_installed_files_and_the_hard_coded_statistics():
    images = read_idx(fashion_mnist.SYSTEM_DIR / "train-images-idx3-ubyte.gz", "fix")
    assert images.shape == (60000, 28, 28)
    counts = np.bincount(images.ravel(), minlength=256)  # exact moments from the histogram of pixel values
    values = np.arange(256) / 255
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert mean == pytest.approx(FASHION_MNIST_MEAN[0], abs=1e-4) and std == pytest.approx(FASHION_MNIST_STD[0], abs=1e-4)


@pytest.mark.skipif(not (fashion_mnist.SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist not installed")
def test_shipped_teacher_is_small_and_as_accurate_as_registered():
    """The 10,000 test images through the shipped teacher give the registered top-1."""
    from teachers import TEACHERS, load_teacher, read_teacher_checkpoint

    entry = TEACHERS["fashion_mnist_cnn"]
    assert entry.path.is_file() and entry.path.stat().st_size < 2_000_000
    data = FashionMNISTDataModule(val_size=0)
    data.setup("test")
    teacher = load_teacher("fashion_mnist_cnn", 10, (1, 28, 28))
    torch.set_num_threads(1)  # 57 GMAC: 1 thread measured 3.7x faster than 2 on a 2-core machine shared with other jobs
    correct = 0
    with torch.no_grad():
        for images, labels, _ in data.test_dataloader():
            correct += int((teacher(images).argmax(-1) == labels).sum())
    accuracy = correct / len(data.datasets["test"])
    assert accuracy == pytest.approx(entry.test_accuracy, abs=1e-4)
    assert read_teacher_checkpoint(entry.path, entry.how_to_make)["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert entry.how_to_make == "make teacher NAME=fashion_mnist_cnn DATA=fashion_mnist"
