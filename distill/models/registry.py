"""The model registry: every architecture is a small function registered by name (as timm does)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from distill.errors import DistillError

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register(factory: ModelFactory) -> ModelFactory:
    """Decorator: register ``factory(num_classes, input_shape, **kwargs) -> nn.Module`` under its name."""
    name = factory.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = factory
    return factory


def available() -> list[str]:
    """Sorted names of every registered model."""
    return sorted(_REGISTRY)


def create(name: str, num_classes: int = 100, input_shape: Sequence[int] = (3, 32, 32), **kwargs) -> nn.Module:
    """Build the model registered as ``name``.

    Args:
        name: a registered name (see ``available()``).
        num_classes: number of output logits C (default: CIFAR-100's 100).
        input_shape: ``(channels, height, width)`` of one image (default: CIFAR's ``(3, 32, 32)``).
        **kwargs: passed to the model's factory.

    Returns:
        An ``nn.Module`` mapping ``[B, *input_shape]`` images to ``[B, num_classes]`` logits.
    """
    if name not in _REGISTRY:
        raise DistillError(f"unknown model {name!r}: available models are {', '.join(available())}")
    return _REGISTRY[name](num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)


@torch.no_grad()
def check_model_fits(model: nn.Module, num_classes: int, input_shape: Sequence[int], field: str) -> None:
    """Run two blank images ``[2, *input_shape]`` through ``model`` (eval mode, no gradient, on its device) and check it
    returns ``[2, num_classes]`` logits; else one ``DistillError`` line naming ``field``.

    A model that cannot take the data's image shape otherwise fails deep inside its first training step
    (a pooling that shrinks the image to nothing, a flatten of the wrong size, a 3-channel stem on grey images).
    Eval mode leaves BatchNorm statistics untouched; the model's mode is restored.
    """
    shape = tuple(int(size) for size in input_shape)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        logits = model(torch.zeros(2, *shape, device=device))
    except (RuntimeError, ValueError) as error:
        reason = " ".join(str(error).split())[:200]
        raise DistillError(
            f"{field}: cannot take the data's images of shape {shape} ({type(error).__name__}: {reason}); "
            "choose a model for this image size or another data set"
        ) from None
    finally:
        model.train(was_training)
    if tuple(logits.shape) != (2, num_classes):
        raise DistillError(
            f"{field}: gives logits of shape {tuple(logits.shape[1:])} per image but the data has {num_classes} "
            "classes; build it with num_classes from the data"
        )
