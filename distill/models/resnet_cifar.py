"""The CIFAR ResNets of He et al. (2016, section 4.2) as CRD and mdistiller build them.

A 3x3 stem, then three stages of ``n`` basic blocks at 32x32, 16x16 and 8x8 (depth = 6n + 2), global
average pooling and a linear classifier. ``resnetNxK`` multiplies every width by K (the stem too).
Module names follow the published checkpoints (``conv1``, ``bn1``, ``layer1..3``, ``downsample``,
``fc``), so their files load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from distill.models.initialization import init_conv_fan_out_
from distill.models.registry import register
from distill.models.resnet_blocks import BasicBlock, make_stage


class CifarResNet(nn.Module):
    """Stem conv-BN-ReLU, three stages of basic blocks (strides 1, 2, 2), pooled linear head.

    Args:
        depth: 6n + 2 (8, 14, 20, 32, 44, 56, 110).
        widths: channels of the stem and of the three stages.
        num_classes: C.
        input_shape: ``(channels, height, width)``; any size works (global pooling), 32x32 is the
            published one.
    """

    def __init__(self, depth: int, widths: Sequence[int], num_classes: int, input_shape: Sequence[int]):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        stem, *stages = widths
        self.conv1 = nn.Conv2d(input_shape[0], stem, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        in_channels = stem
        for index, (channels, stride) in enumerate(zip(stages, (1, 2, 2)), start=1):
            layer = make_stage(BasicBlock, in_channels, channels, blocks_per_stage, stride, "downsample")
            self.add_module(f"layer{index}", layer)
            in_channels = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        init_conv_fan_out_(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, num_classes]``."""
        x = self.relu(self.bn1(self.conv1(images)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def stages(self) -> list[nn.Module]:
        """``[stem, layer1, layer2, layer3, head]`` (see ``distill.models.stages``)."""
        stem = nn.Sequential(self.conv1, self.bn1, self.relu)
        head = nn.Sequential(self.avgpool, nn.Flatten(1), self.fc)
        return [stem, self.layer1, self.layer2, self.layer3, head]


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


@register
def resnet8(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """CIFAR ResNet-8, widths 16/16/32/64 (83,892 parameters at 100 classes)."""
    return CifarResNet(8, _NARROW, num_classes, input_shape)


@register
def resnet14(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """CIFAR ResNet-14 (181,108 parameters at 100 classes)."""
    return CifarResNet(14, _NARROW, num_classes, input_shape)


@register
def resnet20(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """CIFAR ResNet-20 (278,324 parameters at 100 classes): student of resnet56."""
    return CifarResNet(20, _NARROW, num_classes, input_shape)


@register
def resnet32(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """CIFAR ResNet-32 (472,756 parameters at 100 classes): student of resnet110."""
    return CifarResNet(32, _NARROW, num_classes, input_shape)


@register
def resnet44(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """CIFAR ResNet-44 (667,188 parameters at 100 classes)."""
    return CifarResNet(44, _NARROW, num_classes, input_shape)


@register
def resnet56(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """CIFAR ResNet-56 (861,620 parameters at 100 classes): a published teacher."""
    return CifarResNet(56, _NARROW, num_classes, input_shape)


@register
def resnet110(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """CIFAR ResNet-110 (1,736,564 parameters at 100 classes): a published teacher."""
    return CifarResNet(110, _NARROW, num_classes, input_shape)


@register
def resnet8x4(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """ResNet-8 with 4x widths 32/64/128/256 (1,233,540 parameters at 100 classes): student of resnet32x4."""
    return CifarResNet(8, _WIDE, num_classes, input_shape)


@register
def resnet32x4(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """ResNet-32 with 4x widths (7,433,860 parameters at 100 classes): a published teacher."""
    return CifarResNet(32, _WIDE, num_classes, input_shape)
