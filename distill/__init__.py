"""distill: knowledge distillation of image classifiers with pluggable temperature policies.

The library is split by concept:

- ``distill.losses``: pure per-sample tensor functions (KL, DKD, WTTM's power sum).
- ``distill.policies``: temperature policies, small ``nn.Module`` objects that map teacher and student
  logits to per-sample temperatures and loss weights.
- ``distill.divergences``: the divergence ``D`` of the loss frame, as modules the training module calls.
- ``distill.module``: ``DistillationModule``, the LightningModule that composes the pieces.
- ``distill.data``: LightningDataModules that yield ``(image, label, index)`` batches.
- ``distill.models``: the model registry, ``distill.models.create(name, ...)``.
- ``distill.cli``: the ``distill`` command (LightningCLI).
"""

__version__ = "0.1.0"
