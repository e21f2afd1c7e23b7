"""Block-KD's stepping-stone models: student blocks 1..i, a connector, the frozen teacher's later blocks and head.

    N_i = T_head ∘ T_n ∘ ... ∘ T_{j(i)+1} ∘ C_i ∘ S_i ∘ ... ∘ S_1,     i = 1..m (m student blocks)

Blocks. A model's stages are ``[stem, stage_1, ..., stage_k, head]`` (``distill.models.stages``). Its
blocks are the stages between stem and head with the stem folded into the first block (the paper's
S_1 includes the stem: a CIFAR ResNet has 3 blocks, an ImageNet ResNet 4), except where the stem is a
block of its own: a model says so with a ``stem_is_block = True`` attribute (the small CNNs, whose
first stage is a conv block like the others, and the MLPs, whose first stage is a hidden layer like
the others), or the caller overrides it for both models. A model with nothing between stem and head
has one block, its stem.

Alignment (this project's reading; the paper pairs equal block counts). Student block i of m feeds
the teacher after its block ``j(i) = round(i * n / m)`` (halves rounded up, clamped to 1..n) of n:
equal relative depth. The last stone (i = m) is always the whole student body, a connector and the
teacher's head alone; with m = n, j(i) = i.

The stones reuse the block outputs of the student's own forward (the student runs once). The
teacher's stages run without ``no_grad``: their weights are frozen (``requires_grad=False``) and its
BatchNorm layers stay in eval mode, yet the gradient flows through them into the connectors and the
student. Stones that reach the same teacher stage are concatenated along the batch dimension and run
as one call (``batched=True``): exact, because an eval-mode teacher treats every sample on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from distill.methods.connectors import ConnectorKind, make_connector
from distill.models.stages import stage_output_shapes, stages


def block_ends(num_stages: int, stem_is_block: bool = False) -> list[int]:
    """Indices of the stages whose outputs end a block, for a model of ``num_stages`` stages (head included).

    ``[stem, s1, s2, s3, head]`` (5): ``[1, 2, 3]``, or ``[0, 1, 2, 3]`` with ``stem_is_block``;
    ``[stem, head]`` (2): ``[0]``.
    """
    last_body = num_stages - 2
    first = 0 if stem_is_block or last_body == 0 else 1
    return list(range(first, last_body + 1))


def aligned_teacher_blocks(student_blocks: int, teacher_blocks: int) -> list[int]:
    """For student blocks i = 1..m, the teacher block ``j(i) = round(i * n / m)`` (halves up, within 1..n)
    after which stone i enters the teacher: equal relative depth, and ``j(m) = n``."""
    m, n = student_blocks, teacher_blocks
    # Integer arithmetic for round-half-up of i * n / m: floor((2 i n + m) / (2 m)).
    return [min(max((2 * i * n + m) // (2 * m), 1), n) for i in range(1, m + 1)]


def _stem_is_block(model: nn.Module, override: bool | None) -> bool:
    return bool(getattr(model, "stem_is_block", False)) if override is None else bool(override)


class SteppingStones(nn.Module):
    """The stepping stones of one student/teacher pair; its only parameters are the connectors.

    ``forward(images)`` runs the student once through its stages and returns its logits and every
    stone's logits. The student's and the teacher's stage lists are kept as plain lists (not
    submodules): their parameters belong to the student and the teacher, so this module's
    ``state_dict`` holds the connectors only (``connectors.<i>.*``).

    Args:
        student: a ``distill.models`` model (trained).
        teacher: a ``distill.models`` model (frozen: the caller keeps it in eval mode, requires_grad off).
        input_shape: ``(channels, height, width)`` of the images.
        connector: the connector kind (``distill.methods.connectors``).
        stem_is_block: count each model's stem as a block of its own; ``None``: as the model's own
            ``stem_is_block`` attribute says (absent: no).
        batched: run stones that reach the same teacher stage as one concatenated batch.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        input_shape: Sequence[int],
        connector: ConnectorKind = "conv_bn",
        stem_is_block: bool | None = None,
        batched: bool = True,
    ):
        super().__init__()
        self.student_stages = stages(student)
        self.teacher_stages = stages(teacher)
        student_shapes = stage_output_shapes(student, input_shape)
        teacher_shapes = stage_output_shapes(teacher, input_shape)
        self.student_ends = block_ends(len(self.student_stages), _stem_is_block(student, stem_is_block))
        teacher_ends = block_ends(len(self.teacher_stages), _stem_is_block(teacher, stem_is_block))
        entries = aligned_teacher_blocks(len(self.student_ends), len(teacher_ends))
        self.teacher_blocks = entries  # j(i), 1-based, per stone
        # Stone i runs teacher stages from this index on (the stage after teacher block j(i)); nondecreasing in i.
        self.teacher_starts = [teacher_ends[j - 1] + 1 for j in entries]
        self.connectors = nn.ModuleList(
            make_connector(student_shapes[end], teacher_shapes[teacher_ends[j - 1]], connector)
            for end, j in zip(self.student_ends, entries)
        )
        self.batched = bool(batched)

    @property
    def num_stones(self) -> int:
        """m: one stone per student block."""
        return len(self.connectors)

    def student_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The student's forward through its stages: ``([B, C] logits, [F_1, ..., F_m])``, F_i the output of
        student block i (``[B, c_i, h_i, w_i]`` or ``[B, d_i]``)."""
        features, ends, x = [], set(self.student_ends), images
        for index, stage in enumerate(self.student_stages):
            x = stage(x)
            if index in ends:
                features.append(x)
        return x, features

    def teacher_suffixes(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each stone's teacher part: ``inputs[i]`` (the connector's output, shaped as the input of teacher
        stage ``teacher_starts[i]``) through the teacher's remaining stages; -> ``[B, C]`` logits per stone."""
        if not self.batched:
            results = []
            for x, start in zip(inputs, self.teacher_starts):
                for stage in self.teacher_stages[start:]:
                    x = stage(x)
                results.append(x)
            return results
        # One growing stream: at each teacher stage, the stones that enter there join the batch.
        batch = inputs[0].shape[0]
        stream = None
        for index in range(self.teacher_starts[0], len(self.teacher_stages)):
            joining = [x for x, start in zip(inputs, self.teacher_starts) if start == index]
            if joining:
                stream = torch.cat(joining if stream is None else [stream, *joining])
            stream = self.teacher_stages[index](stream)
        return list(stream.split(batch))  # in stone order, as the starts are nondecreasing

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``[B, *input_shape]`` -> (student logits ``[B, C]``, ``[Y^{N_1}, ..., Y^{N_m}]`` each ``[B, C]``)."""
        student_logits, features = self.student_forward(images)
        inputs = [connector(feature) for connector, feature in zip(self.connectors, features)]
        return student_logits, self.teacher_suffixes(inputs)

    def extra_repr(self) -> str:
        return (
            f"student_block_ends={self.student_ends}, teacher_blocks={self.teacher_blocks}, "
            f"teacher_starts={self.teacher_starts}, batched={self.batched}"
        )
