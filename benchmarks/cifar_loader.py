"""Images per second of the CIFAR-100 training loader: the tensor path against the torchvision path.

    python benchmarks/cifar_loader.py [--images 8192] [--repeats 5] [--threads 2] [--workers 2]
                                      [--cutout] [--auto-augment]

Both paths run through ``CIFAR100DataModule`` on synthetic CIFAR-sized data (random uint8 images
written as the official pickle files in a temporary folder, all of them training images) with the
same augmentations (random crop 32 with padding 4, horizontal flip, normalisation; plus Cutout and
AutoAugment when asked):

- ``tensor``: ``augmentation="tensor"``, the whole set held as one tensor, batched augmentation in
  this process with ``--threads`` torch threads, no workers;
- ``torchvision``: ``augmentation="torchvision"``, the per-image torchvision v2 pipeline in
  ``--workers`` DataLoader worker processes (persistent, one torch thread each, as PyTorch sets them).

One timed pass is one full epoch of training batches (``--images`` images, batch 64), consumed on the
CPU. Each path first runs one untimed warm-up epoch (it starts the workers); then the repeats
alternate the order of the two paths, so that the load on a shared machine hits both alike. Reported:
median images per second of each path and the median over repeats of the ratio tensor / torchvision
within the same repeat. Timings only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from distill.data import CIFAR100DataModule

PATHS = ("tensor", "torchvision")


def write_synthetic_cifar100(root: Path, images: int, seed: int = 0) -> None:
    """``root/cifar-100-python/{train,test,meta}``: random images with balanced labels (official keys)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, count in (("train", images), ("test", 100)):
        content = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), "fine_labels": list(np.arange(count) % 100)}
        content["fine_labels"] = [int(label) for label in content["fine_labels"]]
        (folder / name).write_bytes(pickle.dumps(content, protocol=4))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"class_{i}" for i in range(100)]}, protocol=4))


def epoch_seconds(loader, epoch: int) -> tuple[float, int]:
    """Wall time of one pass over ``loader`` (epoch ``epoch``) and the number of images it gave."""
    loader.sampler.set_epoch(epoch)
    images = 0
    start = time.perf_counter()
    for batch, _, _ in loader:
        images += len(batch)
    return time.perf_counter() - start, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8192, help="training images (at least 4,096)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the tensor path")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the torchvision path")
    parser.add_argument("--cutout", action="store_true")
    parser.add_argument("--auto-augment", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        write_synthetic_cifar100(Path(folder), args.images)
        loaders = {}
        for path in PATHS:
            data = CIFAR100DataModule(
                data_dir=folder, batch_size=64, val_size=0, augmentation=path, auto_augment=args.auto_augment,
                cutout=args.cutout, num_workers=args.workers, seed=0,
            )  # fmt: skip
            data.setup("fit")
            loaders[path] = data.train_dataloader()
            epoch_seconds(loaders[path], 0)  # warm-up: starts the workers, first-call costs
        rates: dict[str, list[float]] = {path: [] for path in PATHS}
        ratios = []
        for repeat in range(args.repeats):
            order = PATHS if repeat % 2 == 0 else PATHS[::-1]
            for path in order:
                seconds, images = epoch_seconds(loaders[path], repeat + 1)
                rates[path].append(images / seconds)
            ratios.append(rates["tensor"][-1] / rates["torchvision"][-1])
    augmentations = "crop 32 pad 4 + flip" + (" + AutoAugment" if args.auto_augment else "") + (" + Cutout 16" if args.cutout else "")
    print(f"CIFAR-100 training loader, {args.images} images a pass, batch 64, {augmentations}, normalised;")
    print(f"tensor path: {args.threads} torch threads; torchvision path: {args.workers} workers; {args.repeats} interleaved repeats")
    print(f"  {'path':12s} {'median img/s':>13s} {'min':>9s} {'max':>9s}")
    for path in PATHS:
        print(f"  {path:12s} {statistics.median(rates[path]):13.0f} {min(rates[path]):9.0f} {max(rates[path]):9.0f}")
    print(f"  ratio tensor / torchvision (median over repeats): {statistics.median(ratios):.1f}x "
          f"(range {min(ratios):.1f}-{max(ratios):.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
