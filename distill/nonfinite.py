"""Finding the first training step whose loss or teacher logits were not finite, without a host sync per step.

The training step only keeps references to the per-sample tensors it computed anyway (no kernel, no copy);
``NonFiniteWatch.check`` looks at all of them at once, once per logging interval and before every checkpoint
is written, with one host sync. So a NaN stops the run before it can reach a checkpoint: the newest checkpoint
on disk predates it.

A sample's loss is ``ce_weight * ce + kd_weight * kd`` (the module's frame); its teacher logits are finite
when their standard deviation over the classes (``sigma``, computed in every step for the logs) is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# How many sample indices an error line shows.
SHOWN_SAMPLES = 10


@dataclass(frozen=True)
class NonFinite:
    """The first offending step: ``what`` is ``"loss"`` or ``"teacher logits"``; ``samples`` are training-split
    indices (sorted)."""

    step: int
    epoch: int
    what: str
    samples: list[int]

    def message(self, newest_checkpoint: str | None = None) -> str:
        shown = ", ".join(str(index) for index in self.samples[:SHOWN_SAMPLES])
        more = f" and {len(self.samples) - SHOWN_SAMPLES} more" if len(self.samples) > SHOWN_SAMPLES else ""
        kept = (
            f"the newest checkpoint, {newest_checkpoint}, was written before it and is intact"
            if newest_checkpoint
            else "no checkpoint was written after it"
        )
        fix = (
            "check the teacher checkpoint and those inputs"
            if self.what == "teacher logits"
            else "lower the learning rate or the loss weights, or check those inputs"
        )
        return (
            f"non-finite {self.what} at training step {self.step} (epoch {self.epoch}), training samples [{shown}{more}]; "
            f"{kept}; {fix}"
        )


class NonFiniteWatch:
    """References to each training step's per-sample tensors since the last check (all ``[B]``, on the device)."""

    def __init__(self):
        self._steps: list[tuple[int, int, dict[str, torch.Tensor | None]]] = []

    def add(
        self,
        step: int,
        epoch: int,
        index: torch.Tensor,
        ce: torch.Tensor,
        kd: torch.Tensor | None = None,
        ce_weight: torch.Tensor | None = None,
        kd_weight: torch.Tensor | None = None,
        sigma: torch.Tensor | None = None,
    ) -> None:
        """Keep the step's ``[B]`` tensors (detached): sample index, CE, and for distillation the KD divergence, both
        weights and the teacher's logit std. No kernel runs here."""
        tensors = {"index": index, "ce": ce, "kd": kd, "ce_weight": ce_weight, "kd_weight": kd_weight, "sigma": sigma}
        self._steps.append((step, epoch, {name: None if value is None else value.detach() for name, value in tensors.items()}))

    def __len__(self) -> int:
        return len(self._steps)

    def clear(self) -> None:
        self._steps = []

    def _bad_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(bad loss [N], bad teacher [N])`` over every kept sample, in order (a few kernels, no sync)."""
        losses, teachers = [], []
        for _, _, tensors in self._steps:
            ce = tensors["ce"]
            if tensors["kd"] is None:
                losses.append(ce)
                teachers.append(torch.zeros_like(ce, dtype=torch.bool))
            else:
                losses.append(tensors["ce_weight"] * ce + tensors["kd_weight"] * tensors["kd"])
                teachers.append(~torch.isfinite(tensors["sigma"]))
        return ~torch.isfinite(torch.cat(losses)), torch.cat(teachers)

    def any_bad(self, device: torch.device) -> torch.Tensor:
        """0-d int tensor on ``device``: 1 if any kept sample had a non-finite loss or teacher logits (no sync)."""
        if not self._steps:
            return torch.zeros((), dtype=torch.int64, device=device)
        bad_loss, bad_teacher = self._bad_rows()
        return (bad_loss | bad_teacher).any().to(device=device, dtype=torch.int64)

    def first_bad(self) -> NonFinite | None:
        """The first kept step with a non-finite sample (host sync), or ``None``."""
        if not self._steps:
            return None
        bad_loss, bad_teacher = self._bad_rows()
        bad = (bad_loss | bad_teacher).cpu()
        sizes = [len(tensors["ce"]) for _, _, tensors in self._steps]
        for (step, epoch, tensors), rows, teacher_rows in zip(
            self._steps, bad.split(sizes), bad_teacher.cpu().split(sizes), strict=True
        ):
            if rows.any():
                what = "teacher logits" if teacher_rows.any() else "loss"
                # Teacher rows first: a non-finite teacher row makes that sample's loss non-finite too.
                chosen = teacher_rows if teacher_rows.any() else rows
                samples = sorted(tensors["index"].cpu()[chosen].tolist())
                return NonFinite(step, epoch, what, samples)
        return None


def agree_across_ranks(local: NonFinite | None, device: torch.device) -> NonFinite:
    """The globally first offending step, with the samples of every rank at that step (collective: call it on
    every rank, after the ranks agreed that one of them saw a non-finite value)."""
    import torch.distributed as dist

    none = 2**62
    step = torch.tensor(local.step if local is not None else none, device=device)
    dist.all_reduce(step, op=dist.ReduceOp.MIN)
    mine = local if local is not None and local.step == int(step) else None
    facts = torch.tensor(
        [mine.epoch if mine else -1, int(mine is not None and mine.what == "teacher logits"), len(mine.samples) if mine else 0],
        device=device,
    )
    dist.all_reduce(facts, op=dist.ReduceOp.MAX)
    epoch, teacher, longest = (int(value) for value in facts.tolist())
    padded = torch.full((max(longest, 1),), -1, dtype=torch.int64, device=device)
    if mine is not None:
        padded[: len(mine.samples)] = torch.tensor(mine.samples, dtype=torch.int64, device=device)
    gathered = [torch.empty_like(padded) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, padded)
    samples = sorted({int(index) for index in torch.cat(gathered).tolist() if index >= 0})
    return NonFinite(int(step), epoch, "teacher logits" if teacher else "loss", samples)
