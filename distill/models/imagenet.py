"""ImageNet models from torchvision by name, with weights only from a local file (nothing downloads).

    create("imagenet_resnet34", num_classes=1000, input_shape=(3, 224, 224), weights="r34.pth")

Registered: ``imagenet_resnet18``, ``imagenet_resnet34``, ``imagenet_resnet50``,
``imagenet_mobilenetv2``. The ``imagenet_`` prefix keeps them apart from the CIFAR models of the same
family (``ResNet18`` is the CIFAR variant). The architectures are torchvision's own classes, so
torchvision's published weight files (plain state dicts) load unchanged; this project never asks
torchvision to fetch them. Each class adds only a ``stages()`` method (no new ``state_dict`` keys).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models import MobileNetV2
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from distill.errors import DistillError, load_failure_reason
from distill.models.registry import register


class ImageNetResNet(ResNet):
    """torchvision's ResNet with stages ``[stem (conv-BN-ReLU-maxpool), layer1..4, head]``."""

    def stages(self) -> list[nn.Module]:
        """``[stem, layer1, layer2, layer3, layer4, head]`` (see ``distill.models.stages``)."""
        stem = nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)
        head = nn.Sequential(self.avgpool, nn.Flatten(1), self.fc)
        return [stem, self.layer1, self.layer2, self.layer3, self.layer4, head]


class ImageNetMobileNetV2(MobileNetV2):
    """torchvision's MobileNetV2 with one stage per resolution: the stem with the stride-1 blocks after
    it, then a new stage at every stride-2 inverted residual, then the head (1x1 conv, pool, classifier)."""

    def stages(self) -> list[nn.Module]:
        """``[stem, block groups..., head]`` (see ``distill.models.stages``)."""
        *body, last_conv = self.features
        groups: list[list[nn.Module]] = []
        for index, module in enumerate(body):
            if index == 0 or getattr(module, "stride", 1) == 2:
                groups.append([])
            groups[-1].append(module)
        head = nn.Sequential(last_conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), self.classifier)
        return [*(nn.Sequential(*group) for group in groups), head]


def load_weights_file(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a local weights file into ``model`` strictly, with ``torch.load(weights_only=True)``.

    Args:
        model: the built model.
        path: a plain ``state_dict`` file (torchvision's published format), or a dict holding one
            under ``"state_dict"`` or ``"model"``.

    Returns:
        ``model`` with the file's weights.

    Raises:
        DistillError: the file is missing, unreadable, or does not fit the model (one line).
    """
    path = Path(path)
    if not path.is_file():
        raise DistillError(
            f"weights file {path} not found: give the path of a local state_dict file (nothing is downloaded)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, pickled code
        reason = load_failure_reason(error)
        raise DistillError(f"weights file {path} is corrupt or holds more than weights ({reason})") from None
    if isinstance(payload, dict):
        payload = next((payload[key] for key in ("state_dict", "model") if isinstance(payload.get(key), dict)), payload)
    try:
        model.load_state_dict(payload)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).strip().splitlines()[0]
        raise DistillError(
            f"weights file {path} does not fit {type(model).__name__} ({first}): use a file for this "
            "architecture and number of classes"
        ) from None
    return model


def _build(model: nn.Module, input_shape: Sequence[int], weights: str | Path | None) -> nn.Module:
    if input_shape[0] != 3:
        raise DistillError(f"input_shape: torchvision ImageNet models take 3-channel images, got {tuple(input_shape)}")
    return load_weights_file(model, weights) if weights is not None else model


@register
def imagenet_resnet18(num_classes: int, input_shape: Sequence[int], weights: str | Path | None = None) -> nn.Module:
    """torchvision ResNet-18 (11,689,512 parameters at 1000 classes); ``weights``: a local file."""
    return _build(ImageNetResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes), input_shape, weights)


@register
def imagenet_resnet34(num_classes: int, input_shape: Sequence[int], weights: str | Path | None = None) -> nn.Module:
    """torchvision ResNet-34 (21,797,672 parameters at 1000 classes); ``weights``: a local file."""
    return _build(ImageNetResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes), input_shape, weights)


@register
def imagenet_resnet50(num_classes: int, input_shape: Sequence[int], weights: str | Path | None = None) -> nn.Module:
    """torchvision ResNet-50 (25,557,032 parameters at 1000 classes); ``weights``: a local file."""
    return _build(ImageNetResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes), input_shape, weights)


@register
def imagenet_mobilenetv2(num_classes: int, input_shape: Sequence[int], weights: str | Path | None = None) -> nn.Module:
    """torchvision MobileNetV2 at width 1 (3,504,872 parameters at 1000 classes); ``weights``: a local file."""
    return _build(ImageNetMobileNetV2(num_classes=num_classes), input_shape, weights)
