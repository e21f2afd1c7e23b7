"""The model registry: every architecture is a small function registered by name (as timm does)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def create(name: str, num_classes: int, input_shape: Sequence[int] = (1, 8, 8), **kwargs) -> nn.Module:
    """Build the model registered as ``name``.

    Args:
        name: a registered name (see ``available()``).
        num_classes: number of output logits C.
        input_shape: ``(channels, height, width)`` of one image.
        **kwargs: passed to the model's factory.

    Returns:
        An ``nn.Module`` mapping ``[B, *input_shape]`` images to ``[B, num_classes]`` logits.
    """
    if name not in _REGISTRY:
        raise DistillError(f"unknown model {name!r}: available models are {', '.join(available())}")
    return _REGISTRY[name](num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)
