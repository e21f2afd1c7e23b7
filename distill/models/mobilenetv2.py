"""MobileNetV2 (Sandler et al., 2018) for CIFAR at width 0.5, as CRD and mdistiller build it (``MobileNetV2``).

A strided 3x3 stem, seven groups of inverted residual blocks (expansion 6, except 1 in the first
group) whose second group keeps stride 1 for small images, a 1x1 convolution to 1280 channels,
global average pooling and a linear classifier. On 32x32 images the maps are 16, 16, 16, 8, 4, 4,
2, 2 pixels wide. Module names follow the published checkpoints (``conv1``, ``blocks.G.I.conv``,
``conv2``, ``classifier.0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from distill.models.initialization import init_conv_fan_out_
from distill.models.registry import register

# (expansion t, channels c at width 1, blocks n, stride s of the first block) per group.
_GROUPS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# Groups that end at the same resolution form one stage (stage ends after groups 1, 2, 4 and 6).
_STAGE_GROUPS = ((0, 1), (2,), (3, 4), (5, 6))


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand (BN-ReLU), 3x3 depthwise (strided, BN-ReLU), 1x1 linear projection (BN); the input is
    added when stride is 1 and the width is kept. ``[B, in, H, W] -> [B, out, H / stride, W / stride]``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in, H, W] -> [B, out, H / stride, W / stride]``."""
        return x + self.conv(x) if self.residual else self.conv(x)


class CifarMobileNetV2(nn.Module):
    """Stem, seven inverted-residual groups, 1x1 conv to ``last_channels``, pooled linear head.

    Args:
        num_classes: C.
        input_shape: ``(channels, height, width)``.
        width: channel multiplier (0.5 for the published model).
        last_channels: width of the final 1x1 convolution (1280 at any width up to 1).
    """

    def __init__(self, num_classes: int, input_shape: Sequence[int], width: float = 0.5, last_channels: int = 1280):
        super().__init__()
        in_channels = int(32 * width)
        self.conv1 = _conv_bn_relu(input_shape[0], in_channels, 3, stride=2)
        self.blocks = nn.ModuleList()
        for expansion, channels, count, stride in _GROUPS:
            out_channels = int(channels * width)
            group = []
            for index in range(count):
                group.append(InvertedResidual(in_channels, out_channels, stride if index == 0 else 1, expansion))
                in_channels = out_channels
            self.blocks.append(nn.Sequential(*group))
        self.conv2 = _conv_bn_relu(in_channels, last_channels, 1, stride=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last_channels, num_classes))
        init_conv_fan_out_(self, linear_std=0.01)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, num_classes]``."""
        x = self.conv1(images)
        for group in self.blocks:
            x = group(x)
        return self.classifier(torch.flatten(self.avgpool(self.conv2(x)), 1))

    def stages(self) -> list[nn.Module]:
        """``[stem, groups 0-1, group 2, groups 3-4, groups 5-6, head]``: one stage per resolution."""
        middle = [nn.Sequential(*(self.blocks[index] for index in groups)) for groups in _STAGE_GROUPS]
        head = nn.Sequential(self.conv2, self.avgpool, nn.Flatten(1), self.classifier)
        return [self.conv1, *middle, head]


@register
def MobileNetV2(num_classes: int, input_shape: Sequence[int]) -> nn.Module:  # noqa: N802 (the published name)
    """MobileNetV2 at width 0.5 (812,836 parameters at 100 classes): student of vgg13 and ResNet50."""
    return CifarMobileNetV2(num_classes, input_shape)
