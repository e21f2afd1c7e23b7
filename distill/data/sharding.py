"""Where a data module's batches go: the rank, world size and device of the run, and the samplers that
shard every split across DDP ranks.

The data modules own their sharding (the trainer runs with ``use_distributed_sampler=False``):

- training: ``DistributedSampler`` semantics (a per-epoch permutation from ``seed + epoch``, padded
  with repeats so that every rank gets the same number of samples, rank r takes rows r::W);
- evaluation: rank r takes rows r::W of the split in order, without padding or duplicates, so DDP
  metrics count every sample exactly once (ranks may differ by one sample).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from distill.data.resumable_loader import ResumableImageLoader


@dataclass(frozen=True)
class Placement:
    """The rank that reads the batches, how many ranks share them, and the device they go to."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")


def placement_of(trainer) -> Placement:
    """The trainer's global rank, world size and root device; without a trainer, torch.distributed's
    rank and world size (when initialised) on the CPU.

    Args:
        trainer: a ``lightning.Trainer`` or ``None`` (a data module not attached to one).
    """
    if trainer is not None:
        return Placement(trainer.global_rank, trainer.world_size, trainer.strategy.root_device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Placement(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return Placement()


def shuffle_seed(seed: int | None) -> int:
    """``seed``, or when it is ``None`` the run's seed (``seed_everything`` sets ``PL_GLOBAL_SEED``), else 0."""
    return seed if seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))


def train_sampler(dataset: Dataset, placement: Placement, seed: int) -> DistributedSampler:
    """Shuffled, padded shard of ``dataset`` for ``placement.rank``; call ``set_epoch`` every epoch."""
    return DistributedSampler(
        dataset, num_replicas=placement.world_size, rank=placement.rank, shuffle=True, seed=seed, drop_last=False
    )


def eval_sampler(dataset: Dataset, placement: Placement) -> UnrepeatedDistributedSampler:
    """Rows ``rank::world_size`` of ``dataset`` in order: every sample on exactly one rank."""
    return UnrepeatedDistributedSampler(dataset, num_replicas=placement.world_size, rank=placement.rank, shuffle=False)


def sharded_dataloader(dataset: Dataset, batch_size: int, train: bool, placement: Placement, seed: int, num_workers: int,
                       epoch: int = 0) -> DataLoader:  # fmt: skip
    """A DataLoader of per-image transforms that shards ``dataset`` itself: training, a shuffled and padded
    shard (``DistributedSampler`` semantics) in a ``ResumableImageLoader`` (per-sample seeded augmentation,
    resumable mid-epoch); evaluation, an in-order unpadded one in a plain ``DataLoader``.

    Args:
        dataset: yields ``(image, label, index)`` after its per-image transform.
        batch_size: per rank.
        train: training or evaluation sharding.
        placement: rank, world size and device (pinned memory for a GPU).
        seed: seed of the shuffle and (training) of the augmentation.
        num_workers: DataLoader worker processes (persistent).
        epoch: training: the sampler's epoch until Lightning calls ``set_epoch`` (the loader reads it at its
            first batch, so Lightning's later ``set_epoch`` still decides).

    Returns:
        Batches ``(images [B, ...], labels [B], index [B])``.
    """
    if train:
        return ResumableImageLoader(dataset, batch_size, placement, seed, num_workers, epoch=epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=eval_sampler(dataset, placement),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=placement.device.type == "cuda",
    )
