"""``TensorBatchLoader`` and the samplers of the per-image path: DDP shards (explicit rank and world size,
no processes), per-epoch order, chunking, ``state_dict`` round trips, and Lightning's view of the position."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DistributedSampler

from distill.data import DigitsDataModule, IndexedTensorDataset, TensorBatchLoader
from distill.data.augment import BatchAugmentation
from distill.data.sharding import Placement, sharded_dataloader
from distill.module import DistillationModule

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def dataset(count: int = 103) -> IndexedTensorDataset:
    """``count`` random 3x8x8 uint8 images whose label is their index mod 10."""
    images = torch.randint(0, 256, (count, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return IndexedTensorDataset(images, torch.arange(count) % 10)


def augmentation() -> BatchAugmentation:
    return BatchAugmentation(8, 2, MEAN, STD, flip=True, cutout=4)


def epoch_of(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    loader.sampler.set_epoch(epoch)
    return list(loader)


def indices_of(batches) -> list[int]:
    return torch.cat([index for _, _, index in batches]).tolist()


@pytest.mark.parametrize("world", [1, 2, 3])
def test_training_shards_follow_distributed_sampler_and_cover_every_sample(world):
    data = dataset()
    shards = []
    for rank in range(world):
        loader = TensorBatchLoader(data, 8, train=True, placement=Placement(rank, world), seed=5, transform=augmentation())
        batches = epoch_of(loader, epoch=3)
        reference = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=5)
        reference.set_epoch(3)
        assert indices_of(batches) == list(reference)  # same permutation, padding and rank slice
        assert len(batches) == len(loader) == -(-len(reference) // 8)
        for images, labels, index in batches:
            assert images.shape[1:] == (3, 8, 8) and images.dtype == torch.float32
            assert torch.equal(labels, index % 10)
        shards.append(indices_of(batches))
    assert len({len(shard) for shard in shards}) == 1  # padded: every rank the same number of samples
    assert set().union(*shards) == set(range(len(data)))


@pytest.mark.parametrize("world", [1, 2, 4])
def test_evaluation_shards_have_no_padding_and_no_duplicates(world):
    data = dataset()
    seen = []
    for rank in range(world):
        loader = TensorBatchLoader(data, 10, train=False, placement=Placement(rank, world))
        indices = indices_of(list(loader))
        assert indices == list(range(rank, len(data), world))
        images = torch.cat([images for images, _, _ in loader])
        assert torch.equal(images, data.images[indices])  # no transform: the stored images as they are
        seen += indices
    assert sorted(seen) == list(range(len(data)))


@pytest.mark.parametrize("world", [1, 2])
def test_per_image_path_shards_like_the_tensor_path(world):
    """The torchvision path's DataLoader: the same indices on every rank as the tensor path, epoch by epoch."""
    data = dataset()
    for rank in range(world):
        placement = Placement(rank, world)
        tensor = TensorBatchLoader(data, 8, train=True, placement=placement, seed=7)
        per_image = sharded_dataloader(data, 8, train=True, placement=placement, seed=7, num_workers=0, epoch=2)
        assert indices_of(list(per_image)) == indices_of(epoch_of(tensor, 2))  # started at epoch 2 by itself
        for epoch in (0, 5):
            per_image.sampler.set_epoch(epoch)
            assert indices_of(list(per_image)) == indices_of(epoch_of(tensor, epoch))
        evaluation = sharded_dataloader(data, 8, train=False, placement=placement, seed=7, num_workers=0)
        assert indices_of(list(evaluation)) == list(range(rank, len(data), world))


def test_order_and_augmentation_depend_on_seed_and_epoch_only():
    data = dataset()

    def run(seed, epoch, chunk_images=512):
        loader = TensorBatchLoader(data, 8, train=True, seed=seed, transform=augmentation(), chunk_images=chunk_images)
        return epoch_of(loader, epoch)

    first, again = run(1, 4), run(1, 4)
    for (a, la, ia), (b, lb, ib) in zip(first, again, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb) and torch.equal(ia, ib)
    # Building the batches one at a time or 40 images at a time changes nothing.
    for (a, _, ia), (b, _, ib) in zip(first, run(1, 4, chunk_images=8), strict=True):
        assert torch.equal(a, b) and torch.equal(ia, ib)
    assert indices_of(run(1, 5)) != indices_of(first)
    assert indices_of(run(2, 4)) != indices_of(first)


def test_an_iterator_made_before_set_epoch_serves_the_epoch_set_after():
    """Lightning makes the train iterator, then calls set_epoch (and on resume makes no other one)."""
    data = dataset()
    early = TensorBatchLoader(data, 8, train=True, seed=3, transform=augmentation())
    iterator = iter(early)
    early.sampler.set_epoch(3)
    expected = epoch_of(TensorBatchLoader(data, 8, train=True, seed=3, transform=augmentation()), 3)
    for (a, _, ia), (b, _, ib) in zip(iterator, expected, strict=True):
        assert torch.equal(ia, ib) and torch.equal(a, b)  # the order and the augmentation of epoch 3
    assert early.state_dict()["epoch"] == 3


def test_state_dict_resumes_mid_epoch_with_the_same_batches():
    data = dataset()
    straight = epoch_of(TensorBatchLoader(data, 8, train=True, seed=3, transform=augmentation()), 2)

    interrupted = TensorBatchLoader(data, 8, train=True, seed=3, transform=augmentation())
    interrupted.sampler.set_epoch(2)
    iterator = iter(interrupted)
    for _ in range(5):
        next(iterator)
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "batches_yielded": 5, "world_size": 1, "batch_size": 8}

    resumed = TensorBatchLoader(data, 8, train=True, seed=3, transform=augmentation())
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    rest = list(resumed)  # Lightning would call set_epoch(2) first; load_state_dict already did
    assert len(rest) == len(straight) - 5
    for (a, la, ia), (b, lb, ib) in zip(rest, straight[5:], strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb) and torch.equal(ia, ib)
    assert resumed.state_dict()["batches_yielded"] == len(straight)
    # The next epoch starts from its first batch, as does any epoch other than the saved one.
    assert indices_of(epoch_of(resumed, 3)) == indices_of(epoch_of(TensorBatchLoader(data, 8, train=True, seed=3), 3))
    other = TensorBatchLoader(data, 8, train=True, seed=3)
    other.load_state_dict(state)
    assert len(epoch_of(other, 3)) == len(straight)


def test_resuming_with_another_world_size_restarts_the_epoch():
    data = dataset()
    loader = TensorBatchLoader(data, 8, train=True, placement=Placement(0, 2), seed=3)
    with pytest.warns(UserWarning, match="world size 2 .*checkpoint: 1, 8.*restarts from its first batch"):
        loader.load_state_dict({"epoch": 1, "batches_yielded": 4, "world_size": 1, "batch_size": 8})
    assert len(list(loader)) == len(loader)


class RecordPosition(L.Callback):
    """The train loader's ``batches_yielded`` at every ``on_train_batch_end`` (where a mid-epoch checkpoint
    is written), next to Lightning's batch index."""

    def __init__(self):
        self.seen: list[tuple[int, int, int, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        state = trainer.train_dataloader.state_dict()
        self.seen.append((trainer.current_epoch, batch_idx, state["batches_yielded"], state["epoch"]))


def test_lightning_does_not_prefetch_so_the_position_is_the_number_of_batches_trained(tmp_path):
    """A loader with a length is not prefetched by Lightning's data fetcher: at the end of batch j the
    loader has yielded j + 1 batches, and its epoch is the trainer's."""
    L.seed_everything(0)
    recorder = RecordPosition()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, limit_train_batches=4, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[recorder], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(DistillationModule(teacher=None), DigitsDataModule(batch_size=64))
    assert recorder.seen == [(epoch, j, j + 1, epoch) for epoch in (0, 1) for j in range(4)]
