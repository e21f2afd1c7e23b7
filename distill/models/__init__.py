"""Model registry: ``distill.models.create(name, num_classes=..., input_shape=...)``.

One file per family; importing this package registers them all:

- ``cnn.py``, ``mlp.py``: small models for digits and Fashion-MNIST.
- ``resnet_cifar.py`` (resnet8..110, resnet8x4, resnet32x4), ``resnet_large_cifar.py`` (ResNet18/34/50),
  ``wrn.py``, ``vgg.py``, ``mobilenetv2.py``, ``shufflenetv1.py``, ``shufflenetv2.py``: the CIFAR zoo,
  with the module names of the published CRD/mdistiller checkpoints.
- ``imagenet.py``: torchvision's ImageNet models (``imagenet_resnet18`` ...), weights from a local file.

``stages(model)`` cuts any of them into ``[stem, blocks..., head]`` (``stages.py``).
"""

from distill.models import (  # noqa: F401  (registration side effect)
    cnn,
    imagenet,
    mlp,
    mobilenetv2,
    resnet_cifar,
    resnet_large_cifar,
    shufflenetv1,
    shufflenetv2,
    vgg,
    wrn,
)
from distill.models.registry import available, create, register
from distill.models.stages import run_stages, stage_output_shapes, stages

__all__ = ["available", "create", "register", "run_stages", "stage_output_shapes", "stages"]
