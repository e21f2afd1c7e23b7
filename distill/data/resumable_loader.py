"""``ResumableImageLoader``: the per-image training ``DataLoader`` (CIFAR-100's torchvision path, ImageNet) that
resumes mid-epoch exactly, as ``TensorBatchLoader`` does for the in-memory path.

Three pieces, one purpose (the same batches, bit for bit, whether or not the epoch was interrupted):

- ``EpochShardSampler``: ``DistributedSampler``'s shard of an epoch (permutation from ``seed + epoch``,
  padded, rank r takes r::W), yielded as ``(index, epoch)`` pairs from a given position on. A resumed
  epoch skips sample positions here, in the main process: no image of a trained batch is read again.
  The epoch travels with every item because persistent workers keep their own copy of the dataset and
  would not see the loader's state change.
- ``SeededSamples``: item ``(index, epoch)`` -> ``dataset[index]`` with torch's CPU generator seeded by
  ``(seed, epoch, index)`` during the call. torchvision v2's random transforms used here (RandomCrop,
  RandomHorizontalFlip, AutoAugment, RandomResizedCrop, ``Compose``) and the project's ``Cutout`` draw
  only from that generator (``torch.rand``/``randint``/``empty().uniform_`` without a generator), so a
  sample's augmentation depends on (seed, epoch, index) only: not on the worker that reads it, the number
  of workers, the batch size, the world size or where the epoch started.
- ``ResumableImageLoader``: the ``DataLoader``, stateful for Lightning: ``state_dict()`` is the epoch and
  ``batches_yielded`` (batches handed out in that epoch, counted in the main process as they are
  yielded, not as workers prefetch them). Lightning's data fetcher does not prefetch from a loader that
  has a length, so at a checkpoint written in ``on_train_batch_end`` of batch j (0-based) this is j + 1,
  the batches trained. After ``load_state_dict`` the next pass over the same epoch starts at batch
  ``batches_yielded``; a pass over any other epoch starts at 0.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from distill.data.resume_position import ResumePosition

if TYPE_CHECKING:  # sharding builds these loaders, so it cannot be imported from here at run time
    from distill.data.sharding import Placement


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for sample ``index`` of ``epoch``, well mixed by numpy's SeedSequence (as
    ``augmentation_generator``). 32 bits because torch's CPU generator (mt19937) keeps only the low 32 bits
    of its seed; two samples sharing a stream in an epoch merely get the same random draws."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint32)[0])


class EpochShardSampler(DistributedSampler):
    """``DistributedSampler(shuffle=True, drop_last=False)`` whose items are ``(index, epoch)`` pairs, starting at
    position ``skip`` of the rank's shard.

    A ``DistributedSampler`` (subclass), so Lightning neither replaces it nor wraps it, and calls ``set_epoch``
    on it at every epoch start.

    Args:
        size: samples in the dataset.
        placement: rank and world size.
        seed: seed of the per-epoch permutation (``seed + epoch``).
    """

    def __init__(self, size: int, placement: Placement, seed: int):
        super().__init__(range(size), num_replicas=placement.world_size, rank=placement.rank, shuffle=True, seed=seed,
                         drop_last=False)  # fmt: skip
        self.skip = 0  # positions of the shard to leave out in the next pass (set by the loader, then cleared)

    def __iter__(self):
        epoch, skip = self.epoch, self.skip
        self.skip = 0
        for index in itertools.islice(super().__iter__(), skip, None):
            yield index, epoch


class SeededSamples(Dataset):
    """``dataset`` indexed by ``(index, epoch)``: ``dataset[index]`` computed with torch's default CPU generator
    seeded by ``sample_seed(seed, epoch, index)``.

    The generator's previous state is restored afterwards: without workers the transform runs in the training
    process, whose own random stream (dropout, ...) must not depend on the data. Only the CPU generator is
    touched (not ``torch.manual_seed``, which would also reseed every CUDA generator). Safe in forked and
    spawned workers alike: the state is set per sample, nothing is inherited.

    Cost (/tmp timing script, one torch thread, median of 30 batches, on 2 CPU cores): a CIFAR batch of 64
    through the TALS reference transform (crop, flip, AutoAugment, normalise, Cutout) took 36.0 ms unseeded and
    39.3-40.1 ms seeded, +3.2-4.0 ms (9-11%; crop + flip alone, 15.0 -> 18.3 ms, +22%): about 50 us a sample,
    mostly numpy's SeedSequence (the generator's save, seed and restore: 3 us). For ImageNet (decoding a
    500x375 JPEG and RandomResizedCrop 224: 159 ms a batch of 64) it is about 2%.

    Args:
        dataset: yields ``(image, label, index)`` with a random per-image transform.
        seed: the run's augmentation seed.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, epoch = item
        generator = torch.default_generator
        saved = generator.get_state()
        generator.manual_seed(sample_seed(self.seed, epoch, index))
        try:
            return self.dataset[index]
        finally:
            generator.set_state(saved)


class ResumableImageLoader(DataLoader):
    """The training ``DataLoader`` of a per-image dataset: a shuffled, padded DDP shard, per-sample seeded
    augmentation, and a mid-epoch position that Lightning saves and restores.

    Batches: whatever ``dataset`` yields, collated (``(images [B, ...], labels [B], index [B])`` here); ``len``
    is the whole epoch's number of batches, also in a resumed pass (Lightning counts the skipped ones).

    Args:
        dataset: yields ``(image, label, index)`` after its random per-image transform.
        batch_size: per rank (the last batch may be smaller).
        placement: rank, world size and device (pinned memory for a GPU).
        seed: seed of the shuffle and of the augmentation.
        num_workers: worker processes (persistent).
        epoch: the sampler's epoch until Lightning sets it.
    """

    def __init__(self, dataset: Dataset, batch_size: int, placement: Placement, seed: int, num_workers: int,
                 epoch: int = 0):  # fmt: skip
        sampler = EpochShardSampler(len(dataset), placement, seed)
        sampler.set_epoch(epoch)
        super().__init__(
            SeededSamples(dataset, seed),
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            pin_memory=placement.device.type == "cuda",
            # A DataLoader draws a base seed for its workers at every pass, from the global generator unless
            # given one: that draw would shift the training process's random stream (dropout, ...) in a resumed
            # run, which restores that stream from the checkpoint and then starts a pass. The workers' seeds
            # matter to nothing here (every sample is seeded).
            generator=torch.Generator().manual_seed(seed),
        )
        self.world_size = placement.world_size
        self.position = ResumePosition(placement.world_size, batch_size, epoch)

    def __iter__(self):
        # A generator: the epoch and the start are read at the first batch, not when the iterator is made.
        # Lightning makes the train iterator before it calls ``set_epoch`` (and, on resume, makes no other
        # one); the workers get their first indices only then, so they never prefetch another epoch's.
        epoch = self.sampler.epoch
        start = self.position.start(epoch, len(self))
        self.sampler.skip = start * self.batch_size
        for batch in super().__iter__():
            self.position.batches_yielded += 1
            yield batch

    # -- resuming (Lightning's stateful-dataloader support calls these) -------------------------
    def state_dict(self) -> dict[str, int]:
        """The pass's position: ``{"epoch", "batches_yielded", "world_size", "batch_size"}``."""
        return self.position.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue epoch ``state["epoch"]`` after its first ``batches_yielded`` batches (``ResumePosition``)."""
        self.position.load_state_dict(state)
        self.sampler.set_epoch(state["epoch"])
