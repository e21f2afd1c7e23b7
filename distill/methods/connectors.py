"""Connectors: learnable maps from a student feature to the input a teacher stage expects (Block-KD's C_i).

The design is this project's reading (the paper says only that C_i aligns the channel numbers):

- image features ``[B, c, h, w] -> [B, C, H, W]``: a 1x1 convolution for the channels, then BatchNorm
  (``conv_bn``); where the resolution differs, a parameter-free resize on the lower-resolution side of
  the convolution: adaptive average pooling before it when the student's map is larger (any ratio,
  e.g. 14 -> 7 or 28 -> 7), bilinear interpolation after it when smaller (ShuffleV2's 16x16 into
  resnet32x4's 32x32 stage). Both are linear and act per channel, so they commute with the 1x1
  convolution: the order only makes the convolution run on the fewer pixels.
- a flat feature on either side (MLP stages): flatten, one linear layer, reshape to the target.

``kind`` chooses what follows the linear map: ``conv_bn`` (BatchNorm, the default), ``conv_bn_relu``
(BatchNorm then ReLU: the non-negative features a post-activation stage hands on), ``conv`` (nothing,
with a bias). For flat features "conv" means the linear layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from torch import nn

from distill.errors import DistillError

ConnectorKind = Literal["conv_bn", "conv_bn_relu", "conv"]
CONNECTOR_KINDS = ("conv_bn", "conv_bn_relu", "conv")


def make_connector(source: Sequence[int], target: Sequence[int], kind: ConnectorKind = "conv_bn") -> nn.Module:
    """A connector from a student feature of shape ``source`` to a teacher stage input of shape ``target``.

    Args:
        source: the student feature's shape without the batch dimension, ``(c, h, w)`` or ``(d,)``.
        target: the shape the teacher stage takes, ``(C, H, W)`` or ``(D,)``.
        kind: ``conv_bn``, ``conv_bn_relu`` or ``conv`` (module docstring).

    Returns:
        A module mapping ``[B, *source]`` to ``[B, *target]``.
    """
    if kind not in CONNECTOR_KINDS:
        raise DistillError(
            f"model.method.init_args.connector: unknown connector {kind!r}; choose one of {', '.join(CONNECTOR_KINDS)}"
        )
    source, target = tuple(int(size) for size in source), tuple(int(size) for size in target)
    norm = kind != "conv"
    layers: list[nn.Module] = []
    if len(source) == 3 and len(target) == 3:
        (c, h, w), (channels, height, width) = source, target
        shrink = (h, w) != (height, width) and (h > height or w > width)
        if shrink:
            layers.append(nn.AdaptiveAvgPool2d((height, width)))
        layers.append(nn.Conv2d(c, channels, kernel_size=1, bias=not norm))
        if (h, w) != (height, width) and not shrink:
            layers.append(nn.Upsample(size=(height, width), mode="bilinear", align_corners=False))
    else:
        layers += [nn.Flatten(1), nn.Linear(math.prod(source), math.prod(target), bias=not norm)]
        if len(target) > 1:
            layers.append(nn.Unflatten(1, target))
    if norm:
        layers.append(nn.BatchNorm2d(target[0]) if len(target) == 3 else nn.BatchNorm1d(target[0]))
    if kind == "conv_bn_relu":
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)
