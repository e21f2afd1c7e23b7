"""ResNet18/34/50 for 32x32 images, as CRD and mdistiller build them (the TALS pair is ResNet34 -> ResNet18).

ImageNet's stages (64/128/256/512 channels, [2,2,2,2], [3,4,6,3] blocks) behind a 3x3 stride-1 stem
without max pooling, so the four stages run at 32, 16, 8 and 4 pixels. Module names follow the
published checkpoints (``conv1``, ``bn1``, ``layer1..4``, ``shortcut``, ``linear``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.models.initialization import init_conv_fan_out_
from distill.models.registry import register
from distill.models.resnet_blocks import BasicBlock, Bottleneck, make_stage


class CifarLargeResNet(nn.Module):
    """Stem conv-BN-ReLU (64 channels, stride 1), four stages (strides 1, 2, 2, 2), pooled linear head.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        blocks_per_stage: four block counts.
        num_classes: C.
        input_shape: ``(channels, height, width)``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks_per_stage: Sequence[int],
        num_classes: int,
        input_shape: Sequence[int],
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_channels = 64
        for index, (channels, count, stride) in enumerate(
            zip((64, 128, 256, 512), blocks_per_stage, (1, 2, 2, 2)), start=1
        ):
            self.add_module(f"layer{index}", make_stage(block, in_channels, channels, count, stride, "shortcut"))
            in_channels = channels * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_channels, num_classes)
        init_conv_fan_out_(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, num_classes]``."""
        x = F.relu(self.bn1(self.conv1(images)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(torch.flatten(self.avgpool(x), 1))

    def stages(self) -> list[nn.Module]:
        """``[stem, layer1, layer2, layer3, layer4, head]`` (see ``distill.models.stages``)."""
        stem = nn.Sequential(self.conv1, self.bn1, nn.ReLU())
        head = nn.Sequential(self.avgpool, nn.Flatten(1), self.linear)
        return [stem, self.layer1, self.layer2, self.layer3, self.layer4, head]


@register
def ResNet18(num_classes: int, input_shape: Sequence[int]) -> nn.Module:  # noqa: N802 (the published name)
    """ResNet-18 for 32x32 images (11,220,132 parameters at 100 classes): the TALS student."""
    return CifarLargeResNet(BasicBlock, (2, 2, 2, 2), num_classes, input_shape)


@register
def ResNet34(num_classes: int, input_shape: Sequence[int]) -> nn.Module:  # noqa: N802
    """ResNet-34 for 32x32 images (21,328,292 parameters at 100 classes): the TALS teacher."""
    return CifarLargeResNet(BasicBlock, (3, 4, 6, 3), num_classes, input_shape)


@register
def ResNet50(num_classes: int, input_shape: Sequence[int]) -> nn.Module:  # noqa: N802
    """ResNet-50 for 32x32 images (23,705,252 parameters at 100 classes): a published teacher."""
    return CifarLargeResNet(Bottleneck, (3, 4, 6, 3), num_classes, input_shape)
