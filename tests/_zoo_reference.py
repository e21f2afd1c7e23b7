"""Independent functional forward passes of the CIFAR zoo, for ``tests/test_zoo.py``.

Each function computes a model's logits from a published-format ``state_dict`` alone, with
``torch.nn.functional`` calls keyed by the checkpoint names, written from the architectures'
descriptions (CRD/mdistiller layout): no ``distill`` module, no ``nn.Module``, the published fixed
pooling windows (8 / 4 / 2 pixels at 32x32) instead of global pooling, and the channel shuffle
spelled out as a reshape. If a ``distill.models`` class put a ReLU, a shortcut or a stride in the
wrong place, its logits would differ from these on the same weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

State = dict[str, torch.Tensor]


def _conv(x: torch.Tensor, sd: State, name: str, stride: int = 1) -> torch.Tensor:
    weight = sd[f"{name}.weight"]
    groups = x.shape[1] // weight.shape[1]
    return F.conv2d(x, weight, sd.get(f"{name}.bias"), stride, weight.shape[-1] // 2, 1, groups)


def _bn(x: torch.Tensor, sd: State, name: str) -> torch.Tensor:
    return F.batch_norm(
        x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"], sd[f"{name}.bias"],
        training=False, eps=1e-5,
    )  # fmt: skip


def _linear(x: torch.Tensor, sd: State, name: str) -> torch.Tensor:
    return F.linear(x.flatten(1), sd[f"{name}.weight"], sd[f"{name}.bias"])


def _count(sd: State, prefix: str) -> int:
    """How many numbered children ``prefix.<i>.`` the state dict holds."""
    return len({key[len(prefix) :].split(".")[0] for key in sd if key.startswith(prefix)})


def _shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _resnet(sd: State, x: torch.Tensor, shortcut: str) -> torch.Tensor:
    """Stem and every ``layerK`` of post-activation blocks; returns the last feature map."""
    x = F.relu(_bn(_conv(x, sd, "conv1"), sd, "bn1"))
    stage = 1
    while f"layer{stage}.0.conv1.weight" in sd:
        for i in range(_count(sd, f"layer{stage}.")):
            p, stride = f"layer{stage}.{i}.", 2 if stage > 1 and i == 0 else 1
            if f"{p}conv3.weight" in sd:  # bottleneck: the 3x3 carries the stride
                out = F.relu(_bn(_conv(x, sd, p + "conv1"), sd, p + "bn1"))
                out = F.relu(_bn(_conv(out, sd, p + "conv2", stride), sd, p + "bn2"))
                out = _bn(_conv(out, sd, p + "conv3"), sd, p + "bn3")
            else:
                out = F.relu(_bn(_conv(x, sd, p + "conv1", stride), sd, p + "bn1"))
                out = _bn(_conv(out, sd, p + "conv2"), sd, p + "bn2")
            if f"{p}{shortcut}.0.weight" in sd:
                x = _bn(_conv(x, sd, f"{p}{shortcut}.0", stride), sd, f"{p}{shortcut}.1")
            x = F.relu(out + x)
        stage += 1
    return x


def cifar_resnet(sd: State, x: torch.Tensor) -> torch.Tensor:
    return _linear(F.avg_pool2d(_resnet(sd, x, "downsample"), 8), sd, "fc")


def large_resnet(sd: State, x: torch.Tensor) -> torch.Tensor:
    return _linear(F.adaptive_avg_pool2d(_resnet(sd, x, "shortcut"), 1), sd, "linear")


def wide_resnet(sd: State, x: torch.Tensor) -> torch.Tensor:
    x = _conv(x, sd, "conv1")
    for group in (1, 2, 3):
        for i in range(_count(sd, f"block{group}.layer.")):
            p, stride = f"block{group}.layer.{i}.", 2 if group > 1 and i == 0 else 1
            if f"{p}convShortcut.weight" in sd:  # the activated input feeds both paths
                x = F.relu(_bn(x, sd, p + "bn1"))
                out = F.relu(_bn(_conv(x, sd, p + "conv1", stride), sd, p + "bn2"))
                x = _conv(x, sd, p + "convShortcut", stride) + _conv(out, sd, p + "conv2")
            else:  # the raw input is added
                out = F.relu(_bn(x, sd, p + "bn1"))
                out = F.relu(_bn(_conv(out, sd, p + "conv1", stride), sd, p + "bn2"))
                x = x + _conv(out, sd, p + "conv2")
    return _linear(F.avg_pool2d(F.relu(_bn(x, sd, "bn1")), 8), sd, "fc")


def vgg(sd: State, x: torch.Tensor) -> torch.Tensor:
    height = x.shape[2]
    for block in range(5):
        convs = sum(1 for key in sd if key.startswith(f"block{block}.") and sd[key].dim() == 4)
        for k in range(convs):  # conv at 3k, BN at 3k + 1, ReLU at 3k + 2 except after the last BN
            x = _bn(_conv(x, sd, f"block{block}.{3 * k}"), sd, f"block{block}.{3 * k + 1}")
            x = F.relu(x) if k < convs - 1 else x
        x = F.relu(x)
        if block < 3 or (block == 3 and height == 64):
            x = F.max_pool2d(x, 2, 2)
    return _linear(F.adaptive_avg_pool2d(x, 1), sd, "classifier")


def mobilenetv2(sd: State, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(_bn(_conv(x, sd, "conv1.0", 2), sd, "conv1.1"))
    for group, first_stride in enumerate((1, 1, 2, 2, 1, 2, 1)):
        for i in range(_count(sd, f"blocks.{group}.")):
            p, stride = f"blocks.{group}.{i}.conv.", first_stride if i == 0 else 1
            out = F.relu(_bn(_conv(x, sd, p + "0"), sd, p + "1"))
            out = F.relu(_bn(_conv(out, sd, p + "3", stride), sd, p + "4"))
            out = _bn(_conv(out, sd, p + "6"), sd, p + "7")
            x = x + out if stride == 1 and out.shape == x.shape else out
    x = F.relu(_bn(_conv(x, sd, "conv2.0"), sd, "conv2.1"))
    return _linear(F.avg_pool2d(x, 2, ceil_mode=True), sd, "classifier.0")


def shufflenet_v1(sd: State, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(_bn(_conv(x, sd, "conv1"), sd, "bn1"))
    for stage in (1, 2, 3):
        for i in range(_count(sd, f"layer{stage}.")):
            p, stride = f"layer{stage}.{i}.", 2 if i == 0 else 1
            first_groups = x.shape[1] // sd[f"{p}conv1.weight"].shape[1]
            out = _shuffle(F.relu(_bn(_conv(x, sd, p + "conv1"), sd, p + "bn1")), first_groups)
            out = F.relu(_bn(_conv(out, sd, p + "conv2", stride), sd, p + "bn2"))
            out = _bn(_conv(out, sd, p + "conv3"), sd, p + "bn3")
            if stride == 2:
                x = F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1))
            else:
                x = F.relu(out + x)
    return _linear(F.avg_pool2d(x, 4), sd, "linear")


def shufflenet_v2(sd: State, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(_bn(_conv(x, sd, "conv1"), sd, "bn1"))
    for stage in (1, 2, 3):
        p = f"layer{stage}.0."
        left = F.relu(_bn(_conv(_bn(_conv(x, sd, p + "conv1", 2), sd, p + "bn1"), sd, p + "conv2"), sd, p + "bn2"))
        right = F.relu(_bn(_conv(x, sd, p + "conv3"), sd, p + "bn3"))
        right = _bn(_conv(right, sd, p + "conv4", 2), sd, p + "bn4")
        right = F.relu(_bn(_conv(right, sd, p + "conv5"), sd, p + "bn5"))
        x = _shuffle(torch.cat([left, right], 1), 2)
        for i in range(1, _count(sd, f"layer{stage}.")):
            p, half = f"layer{stage}.{i}.", x.shape[1] // 2
            out = F.relu(_bn(_conv(x[:, half:], sd, p + "conv1"), sd, p + "bn1"))
            out = _bn(_conv(out, sd, p + "conv2"), sd, p + "bn2")
            out = F.relu(_bn(_conv(out, sd, p + "conv3"), sd, p + "bn3"))
            x = _shuffle(torch.cat([x[:, :half], out], 1), 2)
    x = F.relu(_bn(_conv(x, sd, "conv2"), sd, "bn2"))
    return _linear(F.avg_pool2d(x, 4), sd, "linear")


def reference_for(name: str):
    """The functional forward ``(state_dict, images [B, 3, 32, 32]) -> logits [B, C]`` of a zoo name."""
    if name.startswith("resnet"):
        return cifar_resnet
    if name.startswith("ResNet"):
        return large_resnet
    if name.startswith("wrn"):
        return wide_resnet
    if name.startswith("vgg"):
        return vgg
    return {"MobileNetV2": mobilenetv2, "ShuffleV1": shufflenet_v1, "ShuffleV2": shufflenet_v2}[name]
