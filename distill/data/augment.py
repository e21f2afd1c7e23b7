"""Training augmentation in two forms that give the same distribution of images:

- ``BatchAugmentation``: batched tensor operations on the training device (the tensor path). The
  images are padded (and mirrored) once (``store``); a batch is one copy that crops every sample at
  its own offsets and flips it, then optional AutoAugment, normalisation and optional Cutout, all on the
  device. Written here rather than with per-image torchvision transforms for a measured reason: on
  the CPU it is tens of times faster than the per-image pipeline with 2 workers (``make bench``,
  benchmarks/cifar_loader.py).
- ``reference_transform``: the classic per-image torchvision v2 pipeline (one image per call, in
  ``DataLoader`` workers), kept as the reference.

The distribution, per sample: crop offsets uniform over the (2p + 1)^2 positions of the zero-padded
image, horizontal flip with probability 1/2, AutoAugment's CIFAR-10 policy (torchvision's policy
table and operations), Cutout's hole centre uniform over the image. For the same offsets and flips
both forms give identical images (``tests/test_data_augmentation.py``). Order, as the TALS recipe:
crop, flip, AutoAugment (uint8), to float and normalise, Cutout (the hole is set to 0 after
normalisation, i.e. to the data set's mean colour, as in DeVries & Taylor's code).
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from distill.data.normalization import normalize


class Normalize:
    """The non-random ``BatchTransform``: uint8 rows to normalised float32 ``[B, C, H, W]``.

    Args:
        mean: per-channel means.
        std: per-channel standard deviations.
    """

    random = False

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        self.mean, self.std = mean, std

    def store(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def draw(self, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {}

    def __call__(self, stored, rows, params, cpu_params) -> torch.Tensor:
        return normalize(stored[rows], self.mean, self.std)


def mirror_padded(images: torch.Tensor, padding: int) -> torch.Tensor:
    """What ``crop_flip`` reads: the images zero-padded once, followed by their horizontal mirrors.

    Args:
        images: ``[N, C, H, W]``.
        padding: zero padding on every side.

    Returns:
        ``[2N, C, H + 2p, W + 2p]`` contiguous: rows ``0..N-1`` padded, rows ``N..2N-1`` padded and mirrored.
    """
    padded = torch.nn.functional.pad(images, [padding] * 4)
    return torch.cat([padded, padded.flip(-1)])


def crop_flip(stored: torch.Tensor, rows: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
              size: int) -> torch.Tensor:  # fmt: skip
    """Per-sample crops of padded images, each flipped horizontally where ``flip``, in one ``index_select``.

    A flipped crop at column offset ``left`` is the crop of the mirrored image at ``2p - left``; every
    crop is then a window starting at one element of the flat storage, so a strided view whose first
    dimension is "start element" turns the whole batch into one ``index_select`` (about 9x faster on
    the CPU than indexing by sample, row and column, and no boolean masks: no device sync).

    Args:
        stored: ``[2N, C, H + 2p, W + 2p]`` from ``mirror_padded`` (contiguous).
        rows: ``[B]`` which images (``0..N-1``).
        top: ``[B]`` crop row offsets in ``0..2p``.
        left: ``[B]`` crop column offsets in ``0..2p`` (of the unflipped image).
        flip: ``[B]`` bool.
        size: crop side (H = W).

    Returns:
        ``[B, C, size, size]`` with the dtype of ``stored``.
    """
    count, channels, height, width = stored.shape
    image, plane = channels * height * width, height * width
    source = rows + (count // 2) * flip.long()
    column = torch.where(flip, (width - size) - left, left)
    starts = source * image + top * width + column  # [B] flat index of each crop's first pixel
    last = (channels - 1) * plane + (size - 1) * (width + 1)  # a window's last element, from its start
    windows = stored.as_strided((stored.numel() - last, channels, size, size), (1, plane, width, 1))
    return windows.index_select(0, starts)


def cut_out(images: torch.Tensor, centre_y: torch.Tensor, centre_x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square around each sample's centre, clipped at the borders
    (rows ``[cy - size // 2, cy + size // 2)``, as DeVries & Taylor's Cutout).

    Args:
        images: ``[B, C, H, W]``.
        centre_y: ``[B]`` in ``0..H-1``.
        centre_x: ``[B]`` in ``0..W-1``.
        size: side of the hole.

    Returns:
        ``[B, C, H, W]``, a new tensor.
    """
    half = size // 2
    ys = torch.arange(images.shape[-2], device=images.device)
    xs = torch.arange(images.shape[-1], device=images.device)
    inside_y = (ys >= centre_y[:, None] - half) & (ys < centre_y[:, None] + half)  # [B, H]
    inside_x = (xs >= centre_x[:, None] - half) & (xs < centre_x[:, None] + half)  # [B, W]
    # Multiplying by a 0/1 mask is twice as fast as masked_fill here (the hole may hold -0.0, equal to 0).
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])  # [B, H, W]
    return images * keep[:, None].to(images.dtype)


class BatchedAutoAugment:
    """torchvision's AutoAugment (CIFAR-10 policy) with per-sample random choices, applied to a batch.

    Each sample draws its sub-policy, whether each of its two operations applies and each signed
    magnitude's sign, exactly as ``v2.AutoAugment`` does per image. The batch is then processed one
    operation slot at a time: samples that share an (operation, magnitude) form a group, and the group
    goes through torchvision's own operation once (``AutoAugment._apply_image_or_video_transform``, a
    private method pinned by a test that compares against ``v2.AutoAugment`` image by image).
    """

    def __init__(self, policy: v2.AutoAugmentPolicy = v2.AutoAugmentPolicy.CIFAR10):
        self.reference = v2.AutoAugment(policy)
        self.policies = self.reference._policies  # [(op, probability, magnitude bin) x 2] per sub-policy
        self.probability = torch.tensor([[probability for _, probability, _ in policy] for policy in self.policies])
        self._tables: dict[tuple[int, int], tuple[list[tuple[str, float]], torch.Tensor]] = {}

    def draw(self, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``policy [count]``, ``uniform [count, 2]`` (an op applies when below its probability), ``negative [count, 2]``."""
        return {
            "policy": torch.randint(len(self.policies), (count,), generator=generator),
            "uniform": torch.rand(count, 2, generator=generator),
            "negative": torch.rand(count, 2, generator=generator) <= 0.5,
        }

    def _table(self, height: int, width: int) -> tuple[list[tuple[str, float]], torch.Tensor]:
        """Distinct ``(op, signed magnitude)`` pairs, and ``code [policies, 2, 2]``: the pair of (sub-policy,
        slot, negative), computed as ``v2.AutoAugment.forward`` computes magnitudes."""
        if (height, width) not in self._tables:
            operations: list[tuple[str, float]] = []
            code = torch.zeros(len(self.policies), 2, 2, dtype=torch.long)
            for p, policy in enumerate(self.policies):
                for slot, (name, _, magnitude_bin) in enumerate(policy):
                    magnitudes_fn, signed = self.reference._AUGMENTATION_SPACE[name]
                    magnitudes = magnitudes_fn(10, height, width)
                    magnitude = float(magnitudes[magnitude_bin]) if magnitudes is not None else 0.0
                    for negative in (0, 1):
                        operation = (name, -magnitude if negative and signed and magnitudes is not None else magnitude)
                        if operation not in operations:
                            operations.append(operation)
                        code[p, slot, negative] = operations.index(operation)
            self._tables[height, width] = operations, code
        return self._tables[height, width]

    def _codes(self, params: dict[str, torch.Tensor], slot: int, code: torch.Tensor) -> torch.Tensor:
        """``[B]`` operation code of each sample in ``slot``, -1 where the operation does not apply."""
        policy = params["policy"]
        code = code.to(policy.device)[policy, slot, params["negative"][:, slot].long()]
        applies = params["uniform"][:, slot] <= self.probability.to(policy.device)[policy, slot]
        return torch.where(applies, code, -1)

    def __call__(self, images: torch.Tensor, params: dict[str, torch.Tensor], cpu_params: dict[str, torch.Tensor]):
        """``[B, C, H, W]`` uint8 -> augmented ``[B, C, H, W]`` uint8 (a new tensor)."""
        operations, code = self._table(images.shape[-2], images.shape[-1])
        images = images.clone()
        for slot in (0, 1):
            # Groups come from the CPU copy (no device-to-host copy); the device sorts the same keys
            # stably, so its order has the same contiguous groups.
            keys, counts = torch.unique(self._codes(cpu_params, slot, code), sorted=True, return_counts=True)
            order = torch.argsort(self._codes(params, slot, code), stable=True)
            start = 0
            for key, count in zip(keys.tolist(), counts.tolist()):
                group = order[start : start + count]
                start += count
                if key < 0:
                    continue
                name, magnitude = operations[key]
                images[group] = self.reference._apply_image_or_video_transform(
                    images[group], name, magnitude, interpolation=self.reference.interpolation, fill=self.reference._fill
                )
        return images


class BatchAugmentation:
    """The tensor path's training transform (a ``BatchTransform``): random crop with zero padding,
    horizontal flip, optional AutoAugment, normalisation, optional Cutout.

    Args:
        size: image side (CIFAR 32, Fashion-MNIST 28).
        padding: zero padding on every side before the crop (crop offsets 0..2*padding).
        mean: per-channel means.
        std: per-channel standard deviations.
        flip: random horizontal flip with probability 1/2.
        auto_augment: AutoAugment with the CIFAR-10 policy.
        cutout: side of the Cutout hole, 0 for none.
    """

    random = True

    def __init__(self, size: int, padding: int, mean: tuple[float, ...], std: tuple[float, ...], flip: bool = True,
                 auto_augment: bool = False, cutout: int = 0):  # fmt: skip
        self.size, self.padding, self.mean, self.std = size, padding, mean, std
        self.flip = flip
        self.auto_augment = BatchedAutoAugment() if auto_augment else None
        self.cutout = cutout

    def store(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` -> ``[2N, C, H + 2p, W + 2p]`` zero-padded and mirrored, once for the whole run
        (twice the memory of the padded set, for a crop and flip in one copy)."""
        return mirror_padded(images, self.padding)

    def draw(self, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Per-sample parameters (``[count]`` each): crop ``top``/``left``, ``flip``, Cutout centre, AutoAugment."""
        positions = 2 * self.padding + 1
        params = {
            "top": torch.randint(positions, (count,), generator=generator),
            "left": torch.randint(positions, (count,), generator=generator),
            "flip": (torch.rand(count, generator=generator) < 0.5) & self.flip,
        }
        if self.auto_augment is not None:
            params.update({f"aa_{name}": value for name, value in self.auto_augment.draw(count, generator).items()})
        if self.cutout:
            params["cutout_y"] = torch.randint(self.size, (count,), generator=generator)
            params["cutout_x"] = torch.randint(self.size, (count,), generator=generator)
        return params

    def __call__(self, stored, rows, params, cpu_params) -> torch.Tensor:
        """``[B, C, size, size]`` float32 training images of ``rows``."""
        images = crop_flip(stored, rows, params["top"], params["left"], params["flip"], self.size)
        if self.auto_augment is not None:
            images = self.auto_augment(images, _prefixed(params, "aa_"), _prefixed(cpu_params, "aa_"))
        images = normalize(images, self.mean, self.std)
        if self.cutout:
            images = cut_out(images, params["cutout_y"], params["cutout_x"], self.cutout)
        return images


def _prefixed(params: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {name[len(prefix) :]: value for name, value in params.items() if name.startswith(prefix)}


class Cutout(v2.Transform):
    """Per-image Cutout for the reference pipeline: a ``size`` x ``size`` hole of ``value`` around a
    uniformly drawn centre, clipped at the borders (DeVries & Taylor), via torchvision's ``erase``.

    Args:
        size: side of the hole.
        value: fill value (0 after normalisation: the mean colour).
    """

    def __init__(self, size: int = 16, value: float = 0.0):
        super().__init__()
        self.size, self.value = size, value

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        centre_y, centre_x = int(torch.randint(height, ())), int(torch.randint(width, ()))
        half = self.size // 2
        top, left = max(centre_y - half, 0), max(centre_x - half, 0)
        return {"i": top, "j": left, "h": min(centre_y + half, height) - top, "w": min(centre_x + half, width) - left}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.erase(inpt, **params, v=torch.tensor(self.value), inplace=False)


def reference_transform(size: int, padding: int, mean: tuple[float, ...], std: tuple[float, ...], flip: bool = True,
                        auto_augment: bool = False, cutout: int = 0) -> v2.Compose:  # fmt: skip
    """The per-image torchvision v2 pipeline with ``BatchAugmentation``'s distribution, for one uint8
    ``[C, H, W]`` image -> float32 ``[C, size, size]``."""
    steps: list[v2.Transform] = [v2.RandomCrop(size, padding=padding)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if auto_augment:
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if cutout:
        steps.append(Cutout(cutout))
    return v2.Compose(steps)


def reference_eval_transform(mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    """Per-image evaluation pipeline: uint8 ``[C, H, W]`` -> normalised float32."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
