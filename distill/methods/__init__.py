"""Composed methods: objects ``DistillationModule`` calls for the training loss when a step needs more than
the student's and the teacher's logits (``model.method``). Every KD term still goes through the module's
frame (temperature policy + divergence), so any policy composes with any method.

- ``base.py``: the contract (``DistillationMethod``, ``StepLoss``).
- ``blockwise.py``: Block-KD (``BlockwiseDistillation``), built on ``stepping_stones.py`` (the hybrid
  student/teacher models) and ``connectors.py`` (the student-to-teacher feature maps).
"""

from distill.methods.base import DistillationMethod, StepLoss
from distill.methods.blockwise import BlockwiseDistillation
from distill.methods.connectors import make_connector
from distill.methods.stepping_stones import SteppingStones, aligned_teacher_blocks, block_ends

__all__ = [
    "BlockwiseDistillation", "DistillationMethod", "StepLoss", "SteppingStones", "aligned_teacher_blocks",
    "block_ends", "make_connector",
]  # fmt: skip
