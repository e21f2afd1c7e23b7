"""The per-image training loader (CIFAR-100's torchvision path, ImageNet): a resumed epoch gives the uninterrupted
epoch's remaining batches bit for bit, a sample's augmentation does not depend on the workers, the DDP shards are
``DistributedSampler``'s, a real run resumed from a mid-epoch step checkpoint ends as one that never stopped, and
an unreadable image file is one line from the command."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from distill.cli import main
from distill.data import CIFAR100DataModule, ImageNetDataModule
from distill.data.imagenet import UnreadableImage
from distill.data.resumable_loader import ResumableImageLoader, sample_seed
from distill.data.sharding import Placement
from tests.conftest import CONFIGS, DEFAULT_CONFIG, SHORT_RUN, config_args
from tests.fake_data import random_cifar100, write_image_folder
from tests.test_data_cli import run

CLASSES = ["n01440764", "n01443537", "n01484850"]
SEED = 5


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    random_cifar100(root, train=300, test=100)
    return root


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    write_image_folder(root / "train", CLASSES, per_class=6, size=(48, 36))
    write_image_folder(root / "val", CLASSES, per_class=2, size=(36, 48), seed=1)
    return root


def cifar_module(root: Path, num_workers: int, batch_size: int = 16) -> CIFAR100DataModule:
    """The TALS recipe's per-image pipeline: crop, flip, AutoAugment, normalise, Cutout; 200 training images."""
    data = CIFAR100DataModule(data_dir=str(root), batch_size=batch_size, val_size=100, augmentation="torchvision",
                              auto_augment=True, cutout=True, num_workers=num_workers, seed=SEED)  # fmt: skip
    data.setup("fit")
    return data


def imagenet_module(root: Path, num_workers: int, batch_size: int = 4) -> ImageNetDataModule:
    """RandomResizedCrop 32 + flip of JPEGs of 48x36; 15 training images."""
    data = ImageNetDataModule(data_dir=str(root), batch_size=batch_size, val_size=3, num_classes=3, image_size=32,
                              resize_size=36, num_workers=num_workers, seed=SEED)  # fmt: skip
    data.setup("fit")
    return data


MODULES = {"cifar100": (cifar_module, "cifar_dir", 5), "imagenet": (imagenet_module, "imagenet_dir", 2)}


def epoch_of(loader, epoch: int) -> list:
    loader.sampler.set_epoch(epoch)
    return list(loader)


def same_batches(first: list, second: list) -> None:
    assert len(first) == len(second)
    for (images, labels, index), (images2, labels2, index2) in zip(first, second, strict=True):
        assert torch.equal(index, index2) and torch.equal(labels, labels2)
        assert torch.equal(images, images2)  # bit for bit


class CountingReads(torch.utils.data.Dataset):
    """A dataset that counts how many samples were read from it (without workers)."""

    def __init__(self, dataset):
        self.dataset, self.reads = dataset, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        self.reads += 1
        return self.dataset[item]


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("name", list(MODULES))
def test_a_resumed_epoch_gives_the_remaining_batches_bit_for_bit(request, name, num_workers):
    make, folder, k = MODULES[name]
    root = request.getfixturevalue(folder)
    straight_loader = make(root, num_workers).train_dataloader()
    assert isinstance(straight_loader, ResumableImageLoader)
    straight = epoch_of(straight_loader, 3)

    interrupted = make(root, num_workers).train_dataloader()
    interrupted.sampler.set_epoch(3)
    batches = iter(interrupted)
    first = [next(batches) for _ in range(k)]  # workers have prefetched further: the count is what was handed out
    state = interrupted.state_dict()
    assert state == {"epoch": 3, "batches_yielded": k, "world_size": 1, "batch_size": interrupted.batch_size}
    same_batches(first, straight[:k])

    # As Lightning resumes: a new loader, load_state_dict, the iterator made, then set_epoch, then the batches.
    data = make(root, num_workers)
    resumed = data.train_dataloader()
    counter = CountingReads(resumed.dataset.dataset)
    resumed.dataset.dataset = counter
    resumed.load_state_dict(state)
    batches = iter(resumed)
    resumed.sampler.set_epoch(3)
    rest = list(batches)
    same_batches(rest, straight[k:])
    assert len(resumed) == len(straight) and resumed.state_dict()["batches_yielded"] == len(straight)
    if num_workers == 0:  # the trained batches' samples were skipped in the sampler, not read and dropped
        assert counter.reads == sum(len(index) for _, _, index in straight[k:])
    # Any other epoch, and the next pass, start at their first batch.
    assert len(epoch_of(resumed, 4)) == len(straight)
    other = make(root, num_workers).train_dataloader()
    other.load_state_dict(state)
    assert len(epoch_of(other, 2)) == len(straight)


def images_by_index(batches: list) -> dict[int, torch.Tensor]:
    return {int(i): image for images, _, index in batches for image, i in zip(images, index)}


@pytest.mark.parametrize("name", list(MODULES))
def test_a_samples_augmentation_depends_on_seed_epoch_and_index_only(request, name):
    make, folder, _ = MODULES[name]
    root = request.getfixturevalue(folder)
    rng_before = torch.get_rng_state()
    alone = images_by_index(epoch_of(make(root, num_workers=0).train_dataloader(), 1))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the training process's own random stream is untouched
    workers = images_by_index(epoch_of(make(root, num_workers=2).train_dataloader(), 1))
    other_batches = images_by_index(epoch_of(make(root, num_workers=1, batch_size=3).train_dataloader(), 1))
    assert alone.keys() == workers.keys() == other_batches.keys()
    for index, image in alone.items():
        assert torch.equal(workers[index], image) and torch.equal(other_batches[index], image), index
    # Another epoch draws other augmentations for the same samples.
    later = images_by_index(epoch_of(make(root, num_workers=0).train_dataloader(), 2))
    assert sum(not torch.equal(later[index], image) for index, image in alone.items()) > len(alone) // 2
    # What the loader computes is the transform run right after seeding torch's generator per sample.
    dataset = make(root, num_workers=0).train_dataloader().dataset.dataset  # the split with its random transform
    torch.manual_seed(sample_seed(SEED, 1, 0))
    assert torch.equal(dataset[0][0], alone[0])
    assert sample_seed(SEED, 1, 0) != sample_seed(SEED, 2, 0) != sample_seed(SEED, 1, 1)


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_shards_are_distributed_samplers_also_after_a_resume(cifar_dir, world):
    data = cifar_module(cifar_dir, num_workers=0, batch_size=8)
    train = data.datasets["train"]
    shards = []
    for rank in range(world):
        loader = ResumableImageLoader(train, 8, Placement(rank, world), SEED, num_workers=0)
        for epoch in (0, 3):
            reference = DistributedSampler(range(len(train)), num_replicas=world, rank=rank, shuffle=True, seed=SEED)
            reference.set_epoch(epoch)
            order = list(reference)
            loader.sampler.set_epoch(epoch)
            assert list(loader.sampler) == [(index, epoch) for index in order]  # (index, epoch) pairs
            indices = [int(i) for _, _, index in loader for i in index]
            assert indices == order  # same permutation, padding and rank slice
            resumed = ResumableImageLoader(train, 8, Placement(rank, world), SEED, num_workers=0)
            resumed.load_state_dict({"epoch": epoch, "batches_yielded": 3, "world_size": world, "batch_size": 8})
            assert [int(i) for _, _, index in resumed for i in index] == order[3 * 8 :]
        shards.append(indices)
    assert len({len(shard) for shard in shards}) == 1 and set().union(*shards) == set(range(len(train)))
    # Resuming with another world size replays that epoch from its first batch, with a warning.
    loader = ResumableImageLoader(train, 8, Placement(0, world), SEED, num_workers=0)
    with pytest.warns(UserWarning, match=f"world size {world} .*checkpoint: 1, 8.*restarts from its first batch"):
        loader.load_state_dict({"epoch": 1, "batches_yielded": 4, "world_size": 1, "batch_size": 8})
    assert len(list(loader)) == len(loader)


@pytest.mark.slow
def test_a_torchvision_path_run_resumed_from_a_mid_epoch_step_checkpoint_ends_as_one_that_never_stopped(tmp_path):
    """2 epochs of 4 steps with persistent workers; the step checkpoint after step 6 is after batch 1 of epoch 1."""
    random_cifar100(tmp_path / "data", train=300, test=100)
    budget = (
        f"--data.data_dir={tmp_path / 'data'}", "--data.val_size=100", "--data.batch_size=16",
        "--data.augmentation=torchvision", "--data.auto_augment=true", "--data.cutout=true", "--data.num_workers=2",
        "--checkpoint_every_n_steps=3", "--test_after_fit=false", "--per_sample_statistics=null",
    )  # fmt: skip
    straight = run(tmp_path / "straight", "cifar100.yaml", *budget)
    checkpoints = Path(straight.trainer.log_dir) / "checkpoints"
    middle = shutil.copy(checkpoints / "latest-step0000006.ckpt", tmp_path / "middle.ckpt")
    loops = torch.load(middle, weights_only=True)["loops"]["fit_loop"]
    saved = loops["state_dict"]["combined_loader"]  # the train loader's state_dict, as Lightning stored it
    assert saved == [{"epoch": 1, "batches_yielded": 2, "world_size": 1, "batch_size": 16}]
    resumed = run(tmp_path / "resumed", "cifar100.yaml", *budget, f"--ckpt_path={middle}")
    assert resumed.trainer.global_step == straight.trainer.global_step == 8
    for name, value in straight.model.student.state_dict().items():
        assert torch.equal(resumed.model.student.state_dict()[name], value), name


FIX = "re-extract it from the ILSVRC-2012 archive, or delete it (the tree is listed again at the next start)"


def truncate(path: Path) -> None:
    """Keep the first half of the file (a JPEG whose header still parses)."""
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


def test_an_unreadable_image_is_one_line_naming_the_file(imagenet_dir, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(imagenet_dir, root)
    broken = root / "train" / CLASSES[1] / "2.jpg"
    truncate(broken)
    data = imagenet_module(root, num_workers=0)
    train = data.datasets["train"]
    position = next(i for i, row in enumerate(train.rows) if train.dataset.samples[row][0] == str(broken))
    with pytest.raises(UnreadableImage) as error:
        train[position]
    message = str(error.value)
    assert message.startswith(f"ImageNet: {broken} cannot be read as an image (OSError: image file is truncated")
    assert message.endswith(FIX)
    # Raised in a worker, torch re-raises it in this process with the worker's traceback as its text: the same line.
    loader = DataLoader(torch.utils.data.Subset(train, [position]), num_workers=1)
    with pytest.raises(UnreadableImage) as from_worker:
        next(iter(loader))
    assert str(from_worker.value) == message


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 1])
def test_an_unreadable_image_stops_the_command_with_that_line(imagenet_dir, tmp_path, capfd, monkeypatch, num_workers):
    root = tmp_path / "tree"
    shutil.copytree(imagenet_dir, root)
    broken = root / "train" / CLASSES[0] / "4.jpg"
    truncate(broken)
    argv = [
        "distill", "fit", *config_args(DEFAULT_CONFIG), f"--config={CONFIGS / 'data' / 'imagenet.yaml'}", *SHORT_RUN,
        f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        "--model.teacher=null", "--model.student=mlp_small", f"--data.data_dir={root}", "--data.val_size=3",
        "--data.num_classes=3", "--data.batch_size=4", "--data.image_size=32", "--data.resize_size=36",
        f"--data.num_workers={num_workers}", "--test_after_fit=false",
    ]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()  # every training (and validation) image is read in epoch 0: 15 + 3 images, batches of 4
    _, err = capfd.readouterr()
    assert exit_info.value.code == 2, err[-2000:]
    assert "Traceback" not in err and "Caught" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    # Above it only Lightning's start-up lines (accelerator, tips); the error is the last line, whole.
    assert lines[-1].startswith(f"distill: error: ImageNet: {broken} cannot be read as an image (OSError: "), err[-999:]
    assert lines[-1].endswith(FIX)
