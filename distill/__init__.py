"""distill: knowledge distillation of image classifiers with pluggable temperature policies.

The library is split by concept:

- ``distill.losses``: pure per-sample tensor functions (KL, DKD, WTTM's power sum).
- ``distill.policies``: temperature policies, small ``nn.Module`` objects that map teacher and student
  logits to per-sample temperatures and loss weights.
- ``distill.divergences``: the divergence ``D`` of the loss frame, as modules the training module calls.
- ``distill.module``: ``DistillationModule``, the LightningModule that composes the pieces.
- ``distill.data``: LightningDataModules that yield ``(image, label, index)`` batches.
- ``distill.models``: the model registry, ``distill.models.create(name, ...)``.
- ``distill.cli``: the ``distill`` command (LightningCLI); ``distill.run_metrics``: the ``metrics.json``
  every finished run writes.
- ``distill.sweep``: the ``distill-sweep`` command (many runs, seeds, restartable, local or SLURM).
- ``distill.report``: the ``distill-report`` command (seed statistics and a figure for a sweep).
"""

__version__ = "0.1.0"
