"""``TensorBatchLoader``: batches cut from tensors that already sit on the training device.

For data sets that fit in memory (digits, Fashion-MNIST, CIFAR-100) this replaces a ``DataLoader``:
batches are cut and transformed on the device by batched tensor operations (a few batches at a
time), instead of per-sample Python work in worker processes and a host-to-device copy
(benchmarks/cifar_loader.py measures the difference).

Order: ``sampler`` is a ``DistributedSampler`` (training) or an unpadded sharding sampler
(evaluation, see ``distill.data.sharding``), so the order of an epoch depends only on the seed and
the epoch and each DDP rank reads its own shard. Lightning calls ``loader.sampler.set_epoch`` at every
epoch start.

Random augmentation (training only): at the start of each epoch the loader draws the parameters of
every sample of its shard at once (crop offsets, flips, ...) from a CPU generator seeded by
``(seed, epoch, rank)`` and moves them to the device; batch b uses rows ``b*B:(b+1)*B`` of them. So a
batch's augmentation depends only on (seed, epoch, rank, position), on the CPU and on a GPU alike,
and an epoch resumed in the middle gets the same augmentations as an uninterrupted one.

Resuming (Lightning 2.6 saves ``state_dict()`` of a stateful train loader in the checkpoint and calls
``load_state_dict`` on restart): the state is the epoch and ``batches_yielded``, the number of batches
this loader has handed out in that epoch. Lightning's data fetcher does not prefetch from a loader
that has a length, so at a checkpoint written in ``on_train_batch_end`` of batch j (0-based) this is
j + 1, the number of batches trained. After ``load_state_dict`` the next pass over the same epoch
starts at batch ``batches_yielded``; a pass over any other epoch starts at 0.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch

from distill.data.indexed import IndexedTensorDataset
from distill.data.resume_position import ResumePosition
from distill.data.sharding import Placement, eval_sampler, train_sampler


class BatchTransform(Protocol):
    """A batched, on-device transform: ``store`` once, then per batch ``draw`` (per epoch) and ``__call__``."""

    random: bool  # whether ``draw`` returns random parameters

    def store(self, images: torch.Tensor) -> torch.Tensor:
        """What to keep on the device for the whole run, e.g. the images padded once. ``[N, ...]``."""

    def draw(self, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Random parameters for ``count`` samples (CPU tensors with ``count`` rows; ``{}`` if none)."""

    def __call__(
        self, stored: torch.Tensor, rows: torch.Tensor, params: dict[str, torch.Tensor], cpu_params: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The batch ``[B, *input_shape]`` of samples ``rows`` ``[B]`` (on the device), given their parameters:
        ``params`` on the device, ``cpu_params`` the same values on the CPU (``[B]`` rows each; for decisions
        that Python must take, such as grouping, without a device-to-host copy)."""


def augmentation_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """A CPU generator whose stream depends on (seed, epoch, rank) only, well mixed by numpy's SeedSequence."""
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class TensorBatchLoader:
    """Yields ``(images, labels, index)`` batches of one split, on ``placement.device``.

    Args:
        dataset: the split, on the CPU (``images`` in stored form: uint8 or float, ``labels``, ``indices``).
        batch_size: samples per batch (the last batch may be smaller).
        train: shuffled, padded shards and random augmentation; else in order, unpadded shards.
        placement: rank, world size and device.
        seed: seed of the shuffle (``seed + epoch``, as ``DistributedSampler``) and of the augmentation.
        transform: batched transform (augmentation and normalisation); ``None`` yields the stored images.
        stored: the transform's stored tensor already on the device (shared between loaders), if any.
        chunk_images: how many images are built at once (rounded down to whole batches, at least one).
    """

    def __init__(
        self,
        dataset: IndexedTensorDataset,
        batch_size: int,
        train: bool,
        placement: Placement = Placement(),
        seed: int = 0,
        transform: BatchTransform | None = None,
        stored: torch.Tensor | None = None,
        chunk_images: int = 512,
    ):
        self.dataset = dataset
        self.batch_size = batch_size
        self.train = train
        self.placement = placement
        self.seed = seed
        self.transform = transform
        self.chunk_images = chunk_images
        self.sampler = train_sampler(dataset, placement, seed) if train else eval_sampler(dataset, placement)
        self.batch_sampler = None  # Lightning inspects both attributes, like a DataLoader's
        device = placement.device
        if stored is None:
            stored = dataset.images if transform is None else transform.store(dataset.images)
            stored = stored.to(device)
        self.stored = stored
        self.labels = dataset.labels.to(device)
        self.indices = dataset.indices.to(device)
        self.position = ResumePosition(placement.world_size, batch_size)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self):
        # A generator: the epoch and the start are read at the first batch, not when the iterator is made.
        # Lightning makes the train iterator before it calls ``set_epoch`` (and, on resume, does not make
        # another one), so reading the epoch here eagerly would replay the wrong epoch.
        epoch = self.sampler.epoch
        start = self.position.start(epoch, len(self))
        yield from self._batches(epoch, start)

    def _batches(self, epoch: int, start: int):
        device = self.placement.device
        order = torch.tensor(list(self.sampler), dtype=torch.long)  # the shard of this epoch, on the CPU
        cpu_params: dict[str, torch.Tensor] = {}
        if self.train and self.transform is not None and self.transform.random:
            cpu_params = self.transform.draw(len(order), augmentation_generator(self.seed, epoch, self.placement.rank))
        params = {name: value.to(device) for name, value in cpu_params.items()}  # one copy per epoch
        order = order.to(device)
        # Several batches are built at once (one op per chunk instead of one per batch): fewer kernel calls
        # per image. On 1 CPU thread 512 images a chunk ran 1.2x faster than 64 (per batch) and 2.7x
        # faster than 8192 (whose float chunk no longer fits in the cache). Each sample's augmentation
        # depends on its position only, so chunking changes no value.
        per_chunk = max(1, self.chunk_images // self.batch_size)
        for first in range(start, len(self), per_chunk):
            window = slice(first * self.batch_size, (first + per_chunk) * self.batch_size)
            rows = order[window]
            if self.transform is None:
                images = self.stored[rows]
            else:
                images = self.transform(
                    self.stored,
                    rows,
                    {name: value[window] for name, value in params.items()},
                    {name: value[window] for name, value in cpu_params.items()},
                )
            labels, indices = self.labels[rows], self.indices[rows]
            for batch in range(first, min(first + per_chunk, len(self))):
                part = slice((batch - first) * self.batch_size, (batch - first + 1) * self.batch_size)
                self.position.batches_yielded = batch + 1
                yield images[part], labels[part], indices[part]

    # -- resuming (Lightning's stateful-dataloader support calls these) -------------------------
    def state_dict(self) -> dict[str, int]:
        """The pass's position: ``{"epoch", "batches_yielded", "world_size", "batch_size"}``."""
        return self.position.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue epoch ``state["epoch"]`` after its first ``batches_yielded`` batches (``ResumePosition``)."""
        self.position.load_state_dict(state)
        self.sampler.set_epoch(state["epoch"])
