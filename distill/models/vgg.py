"""VGG with BatchNorm for CIFAR (Simonyan & Zisserman, 2015), as CRD and mdistiller build them.

Five blocks of 3x3 conv-BN(-ReLU) layers with 64, 128, 256, 512 and 512 channels, then global average
pooling and one linear layer (no fully connected stack). Each block ends at its last BatchNorm; the
ReLU after it is applied outside the block. 2x2 max pooling follows blocks 0, 1 and 2; after
block 3 only for inputs of 64 pixels or more, so that block 4 sees 4x4 maps on 32x32 images (as in
the reference models). Module names follow the published checkpoints (``block0..4``, ``classifier``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.models.initialization import init_conv_fan_out_
from distill.models.registry import register

# Convolutions per block (each block's width is 64, 128, 256, 512, 512).
_LAYOUTS = {
    "vgg8": (1, 1, 1, 1, 1),
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
_WIDTHS = (64, 128, 256, 512, 512)


def _conv_bn_block(in_channels: int, out_channels: int, num_convs: int) -> nn.Sequential:
    """conv-BN-ReLU repeated, the last ReLU left out: ``[B, in, H, W] -> [B, out, H, W]`` (pre-activation)."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.BatchNorm2d(out_channels)]
        layers.append(nn.ReLU(inplace=True))
        in_channels = out_channels
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """Five conv-BN blocks, each followed by ReLU and its pool, then a pooled linear head.

    Args:
        convs_per_block: five counts (see ``_LAYOUTS``).
        num_classes: C.
        input_shape: ``(channels, height, width)``.
    """

    def __init__(self, convs_per_block: Sequence[int], num_classes: int, input_shape: Sequence[int]):
        super().__init__()
        in_channels = input_shape[0]
        for index, (count, width) in enumerate(zip(convs_per_block, _WIDTHS)):
            self.add_module(f"block{index}", _conv_bn_block(in_channels, width, count))
            in_channels = width
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2) if min(input_shape[1:]) >= 64 else nn.Identity()
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(_WIDTHS[-1], num_classes)
        init_conv_fan_out_(self, linear_std=0.01)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, num_classes]``."""
        x = images
        for index in range(5):
            x = getattr(self, f"pool{index}")(F.relu(getattr(self, f"block{index}")(x)))
        return self.classifier(torch.flatten(x, 1))

    def stages(self) -> list[nn.Module]:
        """``[block0, block1, block2, block3, block4, head]``: each block with its ReLU and its max
        pool (``block0`` is the stem); the head is the global average pool and the classifier."""
        blocks = [
            nn.Sequential(getattr(self, f"block{index}"), nn.ReLU(), getattr(self, f"pool{index}"))
            for index in range(4)
        ]
        head = nn.Sequential(self.pool4, nn.Flatten(1), self.classifier)
        return [*blocks, nn.Sequential(self.block4, nn.ReLU()), head]


def _vgg(name: str, num_classes: int, input_shape: Sequence[int]) -> VGG:
    return VGG(_LAYOUTS[name], num_classes, input_shape)


@register
def vgg8(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """VGG-8 with BatchNorm (3,965,028 parameters at 100 classes): student of vgg13."""
    return _vgg("vgg8", num_classes, input_shape)


@register
def vgg11(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """VGG-11 with BatchNorm (9,277,284 parameters at 100 classes)."""
    return _vgg("vgg11", num_classes, input_shape)


@register
def vgg13(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """VGG-13 with BatchNorm (9,462,180 parameters at 100 classes): a published teacher."""
    return _vgg("vgg13", num_classes, input_shape)


@register
def vgg16(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """VGG-16 with BatchNorm (14,774,436 parameters at 100 classes)."""
    return _vgg("vgg16", num_classes, input_shape)


@register
def vgg19(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """VGG-19 with BatchNorm (20,086,692 parameters at 100 classes)."""
    return _vgg("vgg19", num_classes, input_shape)
