"""Multi-layer perceptrons on flattened images: the smallest students."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from distill.models.registry import register


class MLP(nn.Module):
    """Flatten, then Linear-ReLU hidden layers, then a linear classifier.

    Args:
        num_classes: C.
        input_shape: ``(channels, height, width)``.
        hidden: width of each hidden layer.
    """

    # The first stage ("stem") is a hidden layer like the others: block-wise methods count it as a block.
    stem_is_block = True

    def __init__(self, num_classes: int, input_shape: Sequence[int], hidden: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        features = math.prod(input_shape)
        for width in hidden:
            layers += [nn.Linear(features, width), nn.ReLU(inplace=True)]
            features = width
        layers.append(nn.Linear(features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, images):
        """``[B, *input_shape] -> [B, num_classes]``."""
        return self.layers(images)

    def stages(self) -> list[nn.Module]:
        """One stage per linear layer with its ReLU: ``[flatten + hidden 1, hidden 2, ..., classifier]``."""
        groups: list[list[nn.Module]] = [[]]
        for module in self.layers:
            if isinstance(module, nn.Linear) and any(isinstance(member, nn.Linear) for member in groups[-1]):
                groups.append([])
            groups[-1].append(module)
        return [nn.Sequential(*group) for group in groups]


@register
def mlp_small(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """One hidden layer of 32 units (2.4k parameters on 8x8 images)."""
    return MLP(num_classes, input_shape, hidden=(32,))


@register
def mlp_large(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """Two hidden layers of 256 units."""
    return MLP(num_classes, input_shape, hidden=(256, 256))
