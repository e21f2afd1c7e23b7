"""Images per second of the CIFAR-100 training loader: the tensor path against the torchvision path.

    python benchmarks/cifar_loader.py [--images 8192] [--repeats 7] [--threads 2 1] [--workers 2]
                                      [--cutout] [--auto-augment]

Both paths run through ``CIFAR100DataModule`` on synthetic CIFAR-sized data (random uint8 images
written as the official pickle files in a temporary folder, all of them training images) with the
same augmentations (random crop 32 with padding 4, horizontal flip, normalisation; plus Cutout and
AutoAugment when asked):

- ``tensor``: ``augmentation="tensor"``, the whole set held as one tensor, batched augmentation in
  this process, no workers; one row per ``--threads`` value (torch threads; default 2 and 1);
- ``torchvision``: ``augmentation="torchvision"``, the per-image torchvision v2 pipeline in
  ``--workers`` DataLoader worker processes (persistent, one torch thread each, as PyTorch sets them).

One timed pass is one full epoch of training batches (``--images`` images, batch 64), consumed on the
CPU. Each path first runs one untimed warm-up epoch (it starts the workers); then every repeat times
one pass of each row, in a rotating order, so that the load on a shared machine hits them alike. Two
clocks, per path: wall-clock images per second, and images per CPU-second, the CPU time of every
process doing the path's work (this process's threads; for the torchvision path also its workers,
read from /proc). Reported per path: the median and the best pass over the repeats, and images per
CPU-second; ratios to the torchvision path: of the best passes, the median of the per-repeat ratios,
and the median per-repeat ratio of images per CPU-second; the load average before and after.

Read it on a quiet machine. Other jobs on the same cores hurt the tensor path with 2 threads most,
because every multi-threaded torch operation waits for its slowest thread: on 2 cores, the 2-thread
row gave 318,000 images/s (median) at a load average of 2 but 11,000-27,000 at 5, while the 1-thread
row stayed within 2x. Timings only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
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


def worker_cpu_seconds(loader) -> float:
    """CPU time (user + system) so far of a DataLoader's persistent worker processes (0 without workers).
    Reads the workers of the loader's live iterator (a private DataLoader attribute) from /proc."""
    iterator = getattr(loader, "_iterator", None)
    total = 0.0
    for worker in getattr(iterator, "_workers", []):
        with open(f"/proc/{worker.pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def timed_epoch(loader, epoch: int) -> tuple[float, float, int]:
    """Wall seconds and CPU seconds (this process + the loader's workers) of one pass over ``loader`` at
    ``epoch``, and the number of images it gave."""
    loader.sampler.set_epoch(epoch)
    images = 0
    wall, cpu, workers = time.perf_counter(), time.process_time(), worker_cpu_seconds(loader)
    for batch, _, _ in loader:
        images += len(batch)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu + worker_cpu_seconds(loader) - workers, images


def run(mode: str) -> list:
    """``make bench``'s entry: the tensor path (2 threads) against the torchvision path (2 workers), same
    augmentations (crop + flip + Cutout), images per second of each pass, interleaved repeats."""
    from benchmarks.harness import Figure, budget, Budget

    plan = budget(mode, Budget(repeats=5, warmup=1, timed=1))
    images = 256 if mode == "tiny" else 4096
    workers = 0 if mode == "tiny" else 2
    rates: dict[str, list[float]] = {"tensor": [], "torchvision": []}
    with tempfile.TemporaryDirectory() as folder:
        write_synthetic_cifar100(Path(folder), images)
        loaders = {}
        for path in PATHS:
            data = CIFAR100DataModule(data_dir=folder, batch_size=64, val_size=0, augmentation=path, cutout=True,
                                      num_workers=workers, seed=0)  # fmt: skip
            data.setup("fit")
            loaders[path] = data.train_dataloader()
            timed_epoch(loaders[path], 0)  # warm-up: starts the workers
        threads = torch.get_num_threads()
        for repeat in range(plan.repeats):
            for path in (PATHS if repeat % 2 == 0 else PATHS[::-1]):
                torch.set_num_threads(2 if path == "tensor" else threads)
                wall, _, count = timed_epoch(loaders[path], repeat + 1)
                rates[path].append(count / wall)
        torch.set_num_threads(threads)
    ratios = [a / b for a, b in zip(rates["tensor"], rates["torchvision"])]
    variants = {path: {"median_ms": 1000 * 64 / statistics.median(rates[path])} for path in PATHS}
    return [Figure(
        "data.cifar_loader", "CIFAR training loader, tensor path (2 threads) vs torchvision path (2 workers): speed-up",
        statistics.median(ratios), "x", at_least=10.0, variants=variants,
        setup={"images": images, "batch": 64, "augmentations": "crop 32 pad 4 + flip + Cutout 16, normalised",
               "repeats": plan.repeats, "clock": "wall", "torchvision_workers": workers,
               "images_per_second": {path: round(statistics.median(rates[path])) for path in PATHS}},
        note="median over repeats of (tensor images/s / torchvision images/s); variants show ms per batch of 64",
    )]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8192, help="training images (at least 4,096)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch threads of the tensor path, one row each")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the torchvision path")
    parser.add_argument("--cutout", action="store_true")
    parser.add_argument("--auto-augment", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    # (row name, path, torch threads of this process); the torchvision workers run one thread each.
    variants = [(f"tensor, {n} thread{'s' * (n > 1)}", "tensor", n) for n in args.threads]
    variants.append((f"torchvision, {args.workers} workers", "torchvision", max(args.threads)))
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
            timed_epoch(loaders[path], 0)  # warm-up: starts the workers, first-call costs
        rates: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name, _, _ in variants}
        for repeat in range(args.repeats):
            order = variants[repeat % len(variants) :] + variants[: repeat % len(variants)]  # rotate the order
            for name, path, threads in order:
                torch.set_num_threads(threads)
                wall, cpu, images = timed_epoch(loaders[path], repeat + 1)
                rates[name]["wall"].append(images / wall)
                rates[name]["cpu"].append(images / cpu)
    reference = variants[-1][0]
    augmentations = "crop 32 pad 4 + flip" + (" + AutoAugment" if args.auto_augment else "") + (" + Cutout 16" if args.cutout else "")
    print(f"CIFAR-100 training loader, {args.images} images a pass, batch 64, {augmentations}, normalised; "
          f"{args.repeats} interleaved repeats; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")  # fmt: skip
    print(f"  {'path':24s} {'img/s median':>13s} {'best':>9s} {'img/CPU-s':>10s}   ratio to torchvision: best, median, per CPU-s")
    for name, _, _ in variants:
        wall, cpu = rates[name]["wall"], rates[name]["cpu"]
        row = f"  {name:24s} {statistics.median(wall):13.0f} {max(wall):9.0f} {statistics.median(cpu):10.0f}"
        if name != reference:
            per_repeat = [a / b for a, b in zip(wall, rates[reference]["wall"])]
            per_cpu = [a / b for a, b in zip(cpu, rates[reference]["cpu"])]
            row += (f"   {max(wall) / max(rates[reference]['wall']):5.1f}x {statistics.median(per_repeat):5.1f}x "
                    f"{statistics.median(per_cpu):5.1f}x")  # fmt: skip
        print(row)


if __name__ == "__main__":
    main()
