"""ShuffleNet V2 1x (Ma et al., 2018) for CIFAR, as CRD and mdistiller build it (``ShuffleV2``).

A 1x1 stem of 24 channels (stride 1), three stages (116, 232, 464 channels at 16, 8 and 4 pixels)
that each open with a downsampling unit followed by 3, 7 and 3 basic units, a 1x1 convolution to
1024 channels, global average pooling and a linear classifier. Module names follow the published
checkpoints (``conv1``, ``bn1``, ``layer1..3``, ``conv2``, ``bn2``, ``linear``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.models.registry import register

_STEM = 24


class ShuffleUnit(nn.Module):
    """Basic unit: split the channels in half, keep the first half, transform the second with 1x1
    (BN-ReLU), 3x3 depthwise (BN), 1x1 (BN-ReLU), concatenate, shuffle with 2 groups.

    ``[B, channels, H, W] -> [B, channels, H, W]``.
    """

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, kernel_size=3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, channels, H, W] -> [B, channels, H, W]``."""
        kept, transformed = x.split(x.shape[1] // 2, dim=1)
        transformed = F.relu(self.bn1(self.conv1(transformed)))
        transformed = self.bn2(self.conv2(transformed))
        transformed = F.relu(self.bn3(self.conv3(transformed)))
        return F.channel_shuffle(torch.cat([kept, transformed], dim=1), 2)


class ShuffleDownUnit(nn.Module):
    """Downsampling unit: two paths on the whole input, each making half the output channels at half
    the resolution, concatenated and shuffled with 2 groups. Left: 3x3 depthwise stride 2 (BN), 1x1
    (BN-ReLU). Right: 1x1 (BN-ReLU), 3x3 depthwise stride 2 (BN), 1x1 (BN-ReLU).

    ``[B, in, H, W] -> [B, out, H / 2, W / 2]``.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, half, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(in_channels, half, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)
        self.conv4 = nn.Conv2d(half, half, kernel_size=3, stride=2, padding=1, groups=half, bias=False)
        self.bn4 = nn.BatchNorm2d(half)
        self.conv5 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in, H, W] -> [B, out, H / 2, W / 2]``."""
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return F.channel_shuffle(torch.cat([left, right], dim=1), 2)


class CifarShuffleNetV2(nn.Module):
    """Stem 1x1 conv-BN-ReLU, three stages, 1x1 conv-BN-ReLU, pooled linear head.

    Args:
        num_classes: C.
        input_shape: ``(channels, height, width)``.
        stage_channels: channels of the three stages and of the final 1x1 convolution.
        units_per_stage: basic units after each stage's downsampling unit.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        stage_channels: Sequence[int] = (116, 232, 464, 1024),
        units_per_stage: Sequence[int] = (3, 7, 3),
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], _STEM, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM)
        in_channels = _STEM
        for index, (channels, count) in enumerate(zip(stage_channels, units_per_stage), start=1):
            units = [ShuffleDownUnit(in_channels, channels), *(ShuffleUnit(channels) for _ in range(count))]
            self.add_module(f"layer{index}", nn.Sequential(*units))
            in_channels = channels
        self.conv2 = nn.Conv2d(in_channels, stage_channels[-1], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(stage_channels[-1])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(stage_channels[-1], num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, num_classes]``."""
        x = F.relu(self.bn1(self.conv1(images)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))

    def stages(self) -> list[nn.Module]:
        """``[stem, layer1, layer2, layer3, head]``; the head holds the final 1x1 conv-BN-ReLU."""
        stem = nn.Sequential(self.conv1, self.bn1, nn.ReLU())
        head = nn.Sequential(self.conv2, self.bn2, nn.ReLU(), self.avgpool, nn.Flatten(1), self.linear)
        return [stem, self.layer1, self.layer2, self.layer3, head]


@register
def ShuffleV2(num_classes: int, input_shape: Sequence[int]) -> nn.Module:  # noqa: N802 (the published name)
    """ShuffleNet V2 1x (1,355,528 parameters at 100 classes): student of resnet32x4."""
    return CifarShuffleNetV2(num_classes, input_shape)
