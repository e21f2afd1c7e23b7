"""The tensor path's batched augmentation against the per-image torchvision pipeline: identical images
for the same random draws, and the same distribution of draws through the real CIFAR-100 loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from distill.data import CIFAR100DataModule
from distill.data.augment import BatchAugmentation, BatchedAutoAugment, crop_flip, cut_out, mirror_padded, reference_transform
from distill.data.normalization import CIFAR100_MEAN, CIFAR100_STD, normalize
from tests.fake_data import write_cifar100

SIGNIFICANCE = 1e-3  # the seeds are fixed, so each test passes or fails deterministically


def random_images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_normalize_is_torchvisions_arithmetic_bit_for_bit():
    images = random_images(64)
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(CIFAR100_MEAN), list(CIFAR100_STD))])
    assert torch.equal(normalize(images, CIFAR100_MEAN, CIFAR100_STD), torch.stack([reference(image) for image in images]))


def test_every_crop_offset_and_flip_matches_torchvisions_pad_crop_flip():
    images = random_images(2)
    stored = mirror_padded(images, 4)
    combos = [(top, left, flip) for top in range(9) for left in range(9) for flip in (False, True)]
    top, left, flip = (torch.tensor(column) for column in zip(*combos))
    rows = torch.arange(len(combos)) % 2
    crops = crop_flip(stored, rows, top, left, flip, 32)
    for k, (t, l, f) in enumerate(combos):
        expected = F.crop(F.pad(images[k % 2], [4]), t, l, 32, 32)
        assert torch.equal(crops[k], F.horizontal_flip(expected) if f else expected), (t, l, f)


def replay_reference_draws(seed: int) -> dict[str, torch.Tensor]:
    """The draws ``reference_transform`` (crop, flip, Cutout) makes right after ``torch.manual_seed(seed)``,
    in its order: RandomCrop's top and left, RandomHorizontalFlip's coin, Cutout's centre."""
    torch.manual_seed(seed)
    top, left = int(torch.randint(0, 9, ())), int(torch.randint(0, 9, ()))
    flip = bool(torch.rand(1) < 0.5)
    centre_y, centre_x = int(torch.randint(32, ())), int(torch.randint(32, ()))
    return {"top": top, "left": left, "flip": flip, "cutout_y": centre_y, "cutout_x": centre_x}


def test_same_draws_give_identical_images_through_both_whole_pipelines():
    """Crop + flip + normalise + Cutout: the per-image pipeline and the batched one, float for float."""
    images = random_images(48, seed=1)
    reference = reference_transform(32, 4, CIFAR100_MEAN, CIFAR100_STD, flip=True, cutout=16)
    expected, draws = [], []
    for k, image in enumerate(images):
        torch.manual_seed(100 + k)
        expected.append(reference(image))
        draws.append(replay_reference_draws(100 + k))
    params = {name: torch.tensor([draw[name] for draw in draws]) for name in draws[0]}
    batched = BatchAugmentation(32, 4, CIFAR100_MEAN, CIFAR100_STD, flip=True, cutout=16)
    got = batched(batched.store(images), torch.arange(len(images)), params, params)
    assert {draw["flip"] for draw in draws} == {False, True}
    assert torch.equal(got, torch.stack(expected))


def test_cutout_holes_match_torchvisions_erase_at_every_centre():
    images = torch.randn(32 * 32, 3, 32, 32) + 5  # no pixel is 0 before the hole
    centre_y, centre_x = torch.arange(32).repeat_interleave(32), torch.arange(32).repeat(32)
    holes = cut_out(images, centre_y, centre_x, 16)
    for k in range(len(images)):
        y, x = int(centre_y[k]), int(centre_x[k])
        top, left = max(y - 8, 0), max(x - 8, 0)
        expected = F.erase(images[k], top, left, min(y + 8, 32) - top, min(x + 8, 32) - left, v=torch.tensor(0.0))
        assert torch.equal(holes[k], expected), (y, x)


def replay_auto_augment(augment: BatchedAutoAugment, seed: int) -> dict[str, torch.Tensor]:
    """The draws ``v2.AutoAugment.forward`` makes after ``torch.manual_seed(seed)``, as BatchedAutoAugment's
    parameters: sub-policy, then per operation a coin, and a sign coin only for an applied signed magnitude."""
    torch.manual_seed(seed)
    policy = int(torch.randint(len(augment.policies), ()))
    uniform, negative = [1.0, 1.0], [False, False]
    for slot, (name, probability, magnitude_bin) in enumerate(augment.policies[policy]):
        uniform[slot] = float(torch.rand(()))
        magnitudes_fn, signed = augment.reference._AUGMENTATION_SPACE[name]
        if uniform[slot] <= probability and magnitudes_fn(10, 32, 32) is not None and signed:
            negative[slot] = bool(torch.rand(()) <= 0.5)
    return {"policy": policy, "uniform": uniform, "negative": negative}


def test_batched_auto_augment_equals_torchvisions_per_image_auto_augment():
    """Every one of the 25 CIFAR-10 sub-policies, applied and not, both signs: the grouped batch calls give
    the per-image result exactly (this also pins the private torchvision method the batch calls)."""
    augment = BatchedAutoAugment()
    images = random_images(110, seed=2)  # seeds 1000..1109 draw every sub-policy
    reference = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    expected, draws = [], []
    for k, image in enumerate(images):
        torch.manual_seed(1000 + k)
        expected.append(reference(image))
        draws.append(replay_auto_augment(augment, 1000 + k))
    params = {name: torch.tensor([draw[name] for draw in draws]) for name in draws[0]}
    assert set(params["policy"].tolist()) == set(range(25))
    got = augment(images, params, params)
    assert torch.equal(got, torch.stack(expected))


# -- the same distribution, through the real loaders ----------------------------------------------------
def coded_cifar(root, count: int) -> None:
    """Every image encodes its pixel positions: red = 10 + 7 row, green = 10 + 7 column, blue 128."""
    rows, columns = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    image = torch.stack([10 + 7 * rows, 10 + 7 * columns, torch.full_like(rows, 128)]).to(torch.uint8).numpy()
    images = np.repeat(image[None], count, axis=0)
    write_cifar100(root, images, np.arange(count) % 100, images[:100], np.arange(100))


# Pixels read to decode the crop: inside every crop (rows and columns 4..27 always come from the image,
# not the padding), and a 16x16 hole cannot cover all of them (with the pixel to their right).
PROBES = ((16, 16), (5, 5), (5, 25), (25, 5), (25, 25))


def decode(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Crop offsets, flip and Cutout centre of a batch of normalised augmented coded images ``[B, 3, 32, 32]``."""
    mean, std = torch.tensor(CIFAR100_MEAN).view(3, 1, 1), torch.tensor(CIFAR100_STD).view(3, 1, 1)
    pixels = torch.round((images * std + mean) * 255).long()
    hole = (images == 0).all(1)  # [B, 32, 32]
    found = torch.zeros(len(images), dtype=torch.bool)
    top, left, flip = (torch.zeros(len(images), dtype=torch.long) for _ in range(3))
    for i, j in PROBES:  # the first probe (and its right neighbour) outside the hole
        usable = ~found & ~hole[:, i, j] & ~hole[:, i, j + 1]
        source_row, source_column = (pixels[:, 0, i, j] - 10) // 7, (pixels[:, 1, i, j] - 10) // 7
        flipped = pixels[:, 1, i, j + 1] < pixels[:, 1, i, j]
        # Output row i is padded row top + i, i.e. image row top + i - 4; output column j is image column
        # left + j - 4, or left + 27 - j when flipped.
        top = torch.where(usable, source_row - i + 4, top)
        left = torch.where(usable, torch.where(flipped, source_column - 27 + j, source_column - j + 4), left)
        flip = torch.where(usable, flipped.long(), flip)
        found |= usable
    assert found.all()
    centres = []
    for axis in (2, 1):  # rows, then columns
        covered = hole.any(axis).float()
        first, last = covered.argmax(1), 31 - covered.flip(1).argmax(1)
        centres.append(torch.where(first == 0, last + 1 - 8, first + 8))  # a hole clipped at 0 ends at centre + 8
    return {
        "top": top.numpy(), "left": left.numpy(), "flip": flip.bool().numpy(),
        "cutout_y": centres[0].numpy(), "cutout_x": centres[1].numpy(), "has_hole": hole.any((1, 2)).numpy(),
    }  # fmt: skip


def draws_of(root, augmentation: str, epochs: int) -> dict[str, np.ndarray]:
    """Decoded draws of ``epochs`` epochs of the training loader, crop + flip + Cutout."""
    data = CIFAR100DataModule(data_dir=str(root), batch_size=100, val_size=0, augmentation=augmentation, cutout=True,
                              num_workers=0, seed=11)  # fmt: skip
    data.setup("fit")
    loader = data.train_dataloader()
    decoded = []
    for epoch in range(epochs):
        torch.manual_seed(epoch)  # the per-image path draws from the global RNG
        loader.sampler.set_epoch(epoch)
        decoded += [decode(images) for images, _, _ in loader]
    return {name: np.concatenate([part[name] for part in decoded]) for name in decoded[0]}


@pytest.fixture(scope="module")
def draws(tmp_path_factory):
    root = tmp_path_factory.mktemp("coded")
    coded_cifar(root, 600)
    return {path: draws_of(root, path, epochs=4) for path in ("tensor", "torchvision")}  # 2,400 samples each


def test_decoding_recovers_known_draws():
    """Holes over the centre probe, clipped at every border; flipped and not."""
    rows, columns = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    image = torch.stack([10 + 7 * rows, 10 + 7 * columns, torch.full_like(rows, 128)]).to(torch.uint8)
    images = image.expand(5, -1, -1, -1).contiguous()
    params = {"top": torch.tensor([0, 8, 3, 5, 1]), "left": torch.tensor([8, 0, 4, 2, 7]),
              "flip": torch.tensor([True, False, True, False, True]),
              "cutout_y": torch.tensor([0, 31, 9, 20, 16]), "cutout_x": torch.tensor([31, 0, 7, 16, 16])}  # fmt: skip
    batched = BatchAugmentation(32, 4, CIFAR100_MEAN, CIFAR100_STD, cutout=16)
    decoded = decode(batched(batched.store(images), torch.arange(5), params, params))
    for name in params:
        assert decoded[name].tolist() == params[name].tolist(), name


@pytest.mark.parametrize("path", ["tensor", "torchvision"])
def test_crop_offsets_are_uniform_and_flips_fair(draws, path):
    sample = draws[path]
    cells = np.bincount(sample["top"] * 9 + sample["left"], minlength=81)
    assert len(cells) == 81 and stats.chisquare(cells).pvalue > SIGNIFICANCE
    assert stats.binomtest(int(sample["flip"].sum()), len(sample["flip"]), 0.5).pvalue > SIGNIFICANCE
    # Flips are independent of the offsets.
    table = np.stack([np.bincount(sample["left"][sample["flip"] == f], minlength=9) for f in (False, True)])
    assert stats.chi2_contingency(table).pvalue > SIGNIFICANCE


@pytest.mark.parametrize("path", ["tensor", "torchvision"])
def test_cutout_centres_are_uniform(draws, path):
    sample = draws[path]
    assert sample["has_hole"].all()
    for axis in ("cutout_y", "cutout_x"):
        assert stats.chisquare(np.bincount(sample[axis], minlength=32)).pvalue > SIGNIFICANCE


def test_both_paths_draw_from_the_same_distribution(draws):
    """Two-sample tests, tensor against torchvision: offsets (81 cells), flips, Cutout centres (32 cells per axis)."""
    tensor, per_image = draws["tensor"], draws["torchvision"]
    offsets = [np.bincount(sample["top"] * 9 + sample["left"], minlength=81) for sample in (tensor, per_image)]
    assert stats.chi2_contingency(np.stack(offsets)).pvalue > SIGNIFICANCE
    flips = [[int(sample["flip"].sum()), int((~sample["flip"]).sum())] for sample in (tensor, per_image)]
    assert stats.chi2_contingency(np.array(flips)).pvalue > SIGNIFICANCE
    for axis in ("cutout_y", "cutout_x"):
        centres = [np.bincount(sample[axis], minlength=32) for sample in (tensor, per_image)]
        assert stats.chi2_contingency(np.stack(centres)).pvalue > SIGNIFICANCE
