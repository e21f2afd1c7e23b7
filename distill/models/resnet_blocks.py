"""Residual blocks shared by the CIFAR ResNets (``resnet_cifar.py``) and ResNet18/34/50 (``resnet_large_cifar.py``).

Both families use the post-activation blocks of He et al. (2016): the branch ends in a BatchNorm,
the shortcut is added, then one ReLU. They differ only in what their published checkpoints call the
projection shortcut (``downsample`` in the CIFAR ResNets, ``shortcut`` in ResNet18/34/50), so the
attribute name is a constructor argument; an identity shortcut is an empty ``nn.Sequential``,
which holds no state and so adds no ``state_dict`` keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """The shortcut: identity when the shape is kept, else a strided 1x1 convolution and a BatchNorm."""
    if stride == 1 and in_channels == out_channels:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (the first strided) with BatchNorm, plus the shortcut, then ReLU.

    ``[B, in_channels, H, W] -> [B, channels, H / stride, W / stride]``.

    Args:
        in_channels: input channels.
        channels: output channels.
        stride: stride of the first convolution and of the projection.
        shortcut_name: attribute name of the shortcut module (it names the ``state_dict`` keys).
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, shortcut_name: str = "shortcut"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut_name = shortcut_name
        setattr(self, shortcut_name, projection(in_channels, channels, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, H, W] -> [B, channels, H / stride, W / stride]``."""
        branch = F.relu(self.bn1(self.conv1(x)))
        branch = self.bn2(self.conv2(branch))
        return F.relu(branch + getattr(self, self.shortcut_name)(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, each with BatchNorm, plus the shortcut, then ReLU.

    ``[B, in_channels, H, W] -> [B, 4 * channels, H / stride, W / stride]``.

    Args:
        in_channels: input channels.
        channels: width of the 3x3 convolution; the block outputs ``4 * channels``.
        stride: stride of the 3x3 convolution and of the projection.
        shortcut_name: attribute name of the shortcut module.
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, shortcut_name: str = "shortcut"):
        super().__init__()
        out_channels = self.expansion * channels
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut_name = shortcut_name
        setattr(self, shortcut_name, projection(in_channels, out_channels, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, H, W] -> [B, 4 * channels, H / stride, W / stride]``."""
        branch = F.relu(self.bn1(self.conv1(x)))
        branch = F.relu(self.bn2(self.conv2(branch)))
        branch = self.bn3(self.conv3(branch))
        return F.relu(branch + getattr(self, self.shortcut_name)(x))


def make_stage(
    block: type[BasicBlock] | type[Bottleneck],
    in_channels: int,
    channels: int,
    num_blocks: int,
    stride: int,
    shortcut_name: str,
) -> nn.Sequential:
    """``num_blocks`` blocks; only the first changes the resolution (``stride``) and the width.

    ``[B, in_channels, H, W] -> [B, block.expansion * channels, H / stride, W / stride]``.
    """
    blocks = []
    for index in range(num_blocks):
        blocks.append(block(in_channels, channels, stride if index == 0 else 1, shortcut_name))
        in_channels = channels * block.expansion
    return nn.Sequential(*blocks)
