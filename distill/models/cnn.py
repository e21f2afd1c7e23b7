"""Small convolutional networks for 8x8 (digits) and 28x28 (Fashion-MNIST) images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from distill.models.registry import register


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stages, each followed by 2x2 max pooling while the image is at least 8 pixels wide,
    then global average pooling and a linear classifier. Works for any input size >= 4x4.

    Args:
        num_classes: C.
        input_shape: ``(channels, height, width)``.
        widths: channels of each stage.
        dropout: dropout before the classifier.
    """

    # The first stage ("stem") is a conv block like the others: block-wise methods count it as a block.
    stem_is_block = True

    def __init__(self, num_classes: int, input_shape: Sequence[int], widths: Sequence[int], dropout: float = 0.0):
        super().__init__()
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        size = min(height, width)
        for stage_width in widths:
            layers.append(_conv_block(channels, stage_width))
            channels = stage_width
            if size >= 8:  # 8x8 -> 4x4 -> stays; 28x28 -> 14 -> 7 -> stays
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward(self, images):
        """``[B, C_in, H, W] -> [B, num_classes]``."""
        return self.classifier(self.pool(self.features(images)))

    def stages(self) -> list[nn.Module]:
        """``[stem, block_2, ..., head]``: each conv block with the max pool after it (the first is
        the stem), then the pooled classifier (see ``distill.models.stages``)."""
        groups: list[list[nn.Module]] = []
        for module in self.features:
            if isinstance(module, nn.MaxPool2d):
                groups[-1].append(module)
            else:
                groups.append([module])
        return [*(nn.Sequential(*group) for group in groups), nn.Sequential(self.pool, self.classifier)]


@register
def cnn_tiny(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """Two stages of 8 and 16 channels (about 1.4k parameters)."""
    return SmallCNN(num_classes, input_shape, widths=(8, 16))


@register
def cnn_small(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """Two stages of 16 and 32 channels (about 5k parameters)."""
    return SmallCNN(num_classes, input_shape, widths=(16, 32))


@register
def cnn_large(num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """Three stages of 32, 64 and 64 channels with dropout 0.2 (about 57k parameters): a teacher."""
    return SmallCNN(num_classes, input_shape, widths=(32, 64, 64), dropout=0.2)
