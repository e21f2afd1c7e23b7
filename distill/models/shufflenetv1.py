"""ShuffleNet V1 (Zhang et al., 2018) for CIFAR with 3 groups, as CRD and mdistiller build it (``ShuffleV1``).

A 1x1 stem of 24 channels (stride 1), three stages of 4, 8 and 4 grouped bottlenecks with 240, 480
and 960 output channels at 16, 8 and 4 pixels, global average pooling and a linear classifier.
Module names follow the published checkpoints (``conv1``, ``bn1``, ``layer1..3``, ``linear``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.models.registry import register

_STEM = 24


class ShuffleBottleneck(nn.Module):
    """Grouped 1x1 reduce to a quarter (BN-ReLU), channel shuffle, 3x3 depthwise (strided, BN-ReLU),
    grouped 1x1 expand (BN). Stride 1: the input is added; stride 2: a 3x3 average pool of the input
    is concatenated (so the branch makes ``out_channels`` of ``out_channels + in_channels``). Then ReLU.

    ``[B, in, H, W] -> [B, out (+ in when stride 2), H / stride, W / stride]``. The first 1x1 is not
    grouped when it reads the 24-channel stem.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int):
        super().__init__()
        hidden = out_channels // 4
        self.stride = stride
        self.first_groups = 1 if in_channels == _STEM else groups
        self.conv1 = nn.Conv2d(in_channels, hidden, kernel_size=1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, kernel_size=3, stride=stride, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_channels, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in, H, W] -> [B, out (+ in when stride 2), H / stride, W / stride]``."""
        branch = F.relu(self.bn1(self.conv1(x)))
        branch = F.channel_shuffle(branch, self.first_groups)
        branch = F.relu(self.bn2(self.conv2(branch)))
        branch = self.bn3(self.conv3(branch))
        if self.stride == 2:
            return F.relu(torch.cat([branch, F.avg_pool2d(x, kernel_size=3, stride=2, padding=1)], dim=1))
        return F.relu(branch + x)


class CifarShuffleNetV1(nn.Module):
    """Stem 1x1 conv-BN-ReLU, three stages (each opens with a stride-2 block), pooled linear head.

    Args:
        num_classes: C.
        input_shape: ``(channels, height, width)``.
        stage_channels: output channels of the three stages.
        blocks_per_stage: blocks in each stage.
        groups: groups of the 1x1 convolutions.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        stage_channels: Sequence[int] = (240, 480, 960),
        blocks_per_stage: Sequence[int] = (4, 8, 4),
        groups: int = 3,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], _STEM, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM)
        in_channels = _STEM
        for index, (channels, count) in enumerate(zip(stage_channels, blocks_per_stage), start=1):
            # The stride-2 block concatenates its pooled input, so its branch makes the difference.
            blocks = [ShuffleBottleneck(in_channels, channels - in_channels, stride=2, groups=groups)]
            blocks += [ShuffleBottleneck(channels, channels, stride=1, groups=groups) for _ in range(count - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
            in_channels = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, num_classes]``."""
        x = F.relu(self.bn1(self.conv1(images)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))

    def stages(self) -> list[nn.Module]:
        """``[stem, layer1, layer2, layer3, head]`` (see ``distill.models.stages``)."""
        stem = nn.Sequential(self.conv1, self.bn1, nn.ReLU())
        head = nn.Sequential(self.avgpool, nn.Flatten(1), self.linear)
        return [stem, self.layer1, self.layer2, self.layer3, head]


@register
def ShuffleV1(num_classes: int, input_shape: Sequence[int]) -> nn.Module:  # noqa: N802 (the published name)
    """ShuffleNet V1, 3 groups (949,258 parameters at 100 classes): student of resnet32x4 and wrn_40_2."""
    return CifarShuffleNetV1(num_classes, input_shape)
