"""Model registry: ``distill.models.create(name, num_classes=..., input_shape=...)``.

One file per family (``cnn.py``, ``mlp.py``); importing this package registers them all.
"""

from distill.models import cnn, mlp  # noqa: F401  (registration side effect)
from distill.models.registry import available, check_model_fits, create, register

__all__ = ["available", "check_model_fits", "create", "register"]
