"""The initialisation the CIFAR zoo's reference trainings start from."""

from __future__ import annotations

from torch import nn


def init_conv_fan_out_(model: nn.Module, linear_std: float | None = None) -> nn.Module:
    """He-normal convolutions (fan-out, ReLU gain), BatchNorm at weight 1 and bias 0; linear layers
    get N(0, ``linear_std``) weights and zero bias when ``linear_std`` is given, else PyTorch's default.

    The CIFAR zoo's reference trainings start from this initialisation, so students trained here
    start where theirs did. Returns ``model``.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and linear_std is not None:
            nn.init.normal_(module.weight, 0.0, linear_std)
            nn.init.zeros_(module.bias)
    return model
