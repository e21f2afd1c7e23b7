"""Optimizers the configs can name: ``model.optimizer: {class_path: distill.optim.SAM, init_args: {...}}``."""

from distill.optim.sam import SAM, buffers_unchanged, in_second_pass

__all__ = ["SAM", "buffers_unchanged", "in_second_pass"]
