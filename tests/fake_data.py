"""Small data sets written by the tests in the real on-disk formats, read back by the real loading code.

- CIFAR-100 "python version": pickles as Python 2 wrote them (protocol 2, every string a py2 ``str``
  opcode, numpy arrays through ``numpy.core.multiarray._reconstruct``), so loading them exercises the
  ``encoding="latin1"`` path of the official files.
- idx files (MNIST/Fashion-MNIST), plain or gzipped.
- an ImageFolder tree of small JPEGs.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


class _Python2Pickler(pickle._Pickler):
    """Protocol 2 with Python 2's opcodes for strings (SHORT_BINSTRING / BINSTRING) and numpy 1.x's
    module name for array reconstruction: byte-for-byte the shape of the official CIFAR files."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_string(self, data: bytes) -> None:
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(data)

    def save_bytes(self, obj: bytes) -> None:
        self._save_py2_string(obj)

    def save_str(self, obj: str) -> None:
        self._save_py2_string(obj.encode("latin1"))

    def save_global(self, obj, name=None):
        if obj is np._core.multiarray._reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def python2_pickle(obj) -> bytes:
    """``obj`` pickled as Python 2 with numpy 1.x would have pickled it."""
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def write_cifar100(root: Path, train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                   test_labels: np.ndarray) -> Path:  # fmt: skip
    """``root/cifar-100-python/{train,test,meta}`` in the official format.

    Args:
        root: the data_dir.
        train_images: ``[N, 3, 32, 32]`` uint8.
        train_labels: ``[N]`` fine labels in 0..99.
        test_images: ``[M, 3, 32, 32]`` uint8.
        test_labels: ``[M]``.

    Returns:
        The ``cifar-100-python`` folder.
    """
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        content = {
            "filenames": [f"image_{i:05d}.png" for i in range(len(images))],
            "batch_label": f"{name}ing batch 1 of 1",
            "fine_labels": [int(label) for label in labels],
            "coarse_labels": [int(label) // 5 for label in labels],
            "data": np.ascontiguousarray(images.reshape(len(images), 3072), dtype=np.uint8),
        }
        (folder / name).write_bytes(python2_pickle(content))
    meta = {"fine_label_names": [f"class_{i}" for i in range(100)], "coarse_label_names": [f"super_{i}" for i in range(20)]}
    (folder / "meta").write_bytes(python2_pickle(meta))
    return folder


def random_cifar100(root: Path, train: int, test: int, seed: int = 0) -> Path:
    """A fake CIFAR-100 of random pixels with balanced labels (``train`` and ``test`` multiples of 100)."""
    rng = np.random.default_rng(seed)
    return write_cifar100(
        root,
        rng.integers(0, 256, (train, 3, 32, 32), dtype=np.uint8), np.arange(train) % 100,
        rng.integers(0, 256, (test, 3, 32, 32), dtype=np.uint8), np.arange(test) % 100,
    )  # fmt: skip


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) in the idx format: 0, 0, 0x08, ndim, big-endian int32 sizes, values."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fashion_mnist(folder: Path, train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                        test_labels: np.ndarray, gz: bool = True) -> Path:  # fmt: skip
    """The four Fashion-MNIST idx files (``.gz`` when ``gz``) in ``folder``; images ``[N, 28, 28]`` uint8."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, images, labels in (("train", train_images, train_labels), ("t10k", test_images, test_labels)):
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            raw = idx_bytes(np.asarray(array, dtype=np.uint8))
            name = f"{prefix}-{kind}-ubyte"
            (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(raw) if gz else raw)
    return folder


def random_fashion_mnist(folder: Path, train: int, test: int, gz: bool = True, seed: int = 0) -> Path:
    """A fake Fashion-MNIST of random pixels with balanced labels."""
    rng = np.random.default_rng(seed)
    return write_fashion_mnist(
        folder,
        rng.integers(0, 256, (train, 28, 28), dtype=np.uint8), np.arange(train) % 10,
        rng.integers(0, 256, (test, 28, 28), dtype=np.uint8), np.arange(test) % 10,
        gz=gz,
    )  # fmt: skip


def write_image_folder(root: Path, classes: list[str], per_class: int, size: tuple[int, int] = (40, 30), seed: int = 0) -> Path:
    """``root/<class>/<i>.jpg``: ``per_class`` random-colour JPEGs of ``size`` (width, height) per class."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.jpg", quality=90)
    return root
