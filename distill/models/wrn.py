"""Wide ResNets (Zagoruyko & Komodakis, 2016) for CIFAR, as CRD and mdistiller build them: ``wrn_<depth>_<k>``.

A 3x3 stem of 16 channels, three groups of n pre-activation blocks (depth = 6n + 4) with 16k, 32k
and 64k channels at 32, 16 and 8 pixels, a final BN-ReLU, global average pooling and a linear
classifier; no dropout. Module names follow the published checkpoints (``block1.layer.0.bn1``,
``convShortcut``, ``fc``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.models.initialization import init_conv_fan_out_
from distill.models.registry import register


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3 (strided), BN-ReLU-conv3x3, plus the shortcut.

    When the width changes, the first BN-ReLU is shared by both paths and the shortcut is a strided
    1x1 convolution ``convShortcut`` on the activated input; otherwise the raw input is added.
    ``[B, in_channels, H, W] -> [B, channels, H / stride, W / stride]``.
    """

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.projects = in_channels != channels
        if self.projects:
            self.convShortcut = nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, H, W] -> [B, channels, H / stride, W / stride]``."""
        activated = F.relu(self.bn1(x))
        branch = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return branch + (self.convShortcut(activated) if self.projects else x)


class WideGroup(nn.Module):
    """``n`` wide blocks kept in ``self.layer`` (the published key prefix ``blockK.layer``)."""

    def __init__(self, num_blocks: int, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            *(
                WideBasicBlock(in_channels if index == 0 else channels, channels, stride if index == 0 else 1)
                for index in range(num_blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, H, W] -> [B, channels, H / stride, W / stride]``."""
        return self.layer(x)


class WideResNet(nn.Module):
    """Stem conv, three wide groups (strides 1, 2, 2), BN-ReLU, pooled linear head.

    Args:
        depth: 6n + 4 (16, 40).
        widen_factor: k.
        num_classes: C.
        input_shape: ``(channels, height, width)``.
    """

    def __init__(self, depth: int, widen_factor: int, num_classes: int, input_shape: Sequence[int]):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"a wide ResNet has depth 6n + 4, got {depth}")
        blocks_per_group = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(input_shape[0], 16, kernel_size=3, padding=1, bias=False)
        self.block1 = WideGroup(blocks_per_group, 16, widths[0], stride=1)
        self.block2 = WideGroup(blocks_per_group, widths[0], widths[1], stride=2)
        self.block3 = WideGroup(blocks_per_group, widths[1], widths[2], stride=2)
        self.bn1 = nn.BatchNorm2d(widths[2])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)
        init_conv_fan_out_(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, num_classes]``."""
        x = self.block3(self.block2(self.block1(self.conv1(images))))
        return self.fc(torch.flatten(self.avgpool(self.relu(self.bn1(x))), 1))

    def stages(self) -> list[nn.Module]:
        """``[stem, block1, block2, block3, head]``; the head holds the final BN-ReLU."""
        head = nn.Sequential(self.bn1, self.relu, self.avgpool, nn.Flatten(1), self.fc)
        return [self.conv1, self.block1, self.block2, self.block3, head]


@register
def wrn_16_1(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """WRN-16-1 (180,916 parameters at 100 classes)."""
    return WideResNet(16, 1, num_classes, input_shape)


@register
def wrn_16_2(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """WRN-16-2 (703,284 parameters at 100 classes): student of wrn_40_2."""
    return WideResNet(16, 2, num_classes, input_shape)


@register
def wrn_40_1(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """WRN-40-1 (569,780 parameters at 100 classes): student of wrn_40_2."""
    return WideResNet(40, 1, num_classes, input_shape)


@register
def wrn_40_2(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """WRN-40-2 (2,255,156 parameters at 100 classes): a published teacher."""
    return WideResNet(40, 2, num_classes, input_shape)
