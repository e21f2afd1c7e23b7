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


def sample_list(samples: list[int]) -> str:
    """``"3, 17, 40"``, the first ``SHOWN_SAMPLES`` of them and how many more."""
    shown = ", ".join(str(index) for index in samples[:SHOWN_SAMPLES])
    return shown + (f" and {len(samples) - SHOWN_SAMPLES} more" if len(samples) > SHOWN_SAMPLES else "")


@dataclass(frozen=True)
class NonFinite:
    """The first offending step: ``what`` is ``"loss"`` or ``"teacher logits"``; ``samples`` are training-split
    indices (sorted)."""

    step: int
    epoch: int
    what: str
    samples: list[int]

    def message(self, newest_checkpoint: str | None = None) -> str:
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
            f"non-finite {self.what} at training step {self.step} (epoch {self.epoch}), training samples "
            f"[{sample_list(self.samples)}]; {kept}; {fix}"
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
        loss: torch.Tensor | None = None,
    ) -> None:
        """Keep the step's ``[B]`` tensors (detached): sample index, CE, and for distillation the KD divergence, both
        weights and the teacher's logit std; and the step's 0-d ``loss`` (a composed method such as Block-KD adds
        terms that are not per sample: a non-finite one counts for every sample of the batch). No kernel runs here."""
        tensors = {"index": index, "ce": ce, "kd": kd, "ce_weight": ce_weight, "kd_weight": kd_weight, "sigma": sigma,
                   "loss": loss}  # fmt: skip
        kept = {name: None if value is None else value.detach() for name, value in tensors.items()}
        self._steps.append((step, epoch, kept))

    def __len__(self) -> int:
        return len(self._steps)

    def clear(self) -> None:
        self._steps = []

    def _bad(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(bad loss [N], bad teacher [N], bad step loss [steps])`` over everything kept, in order (a few
        kernels, no sync)."""
        losses, teachers, step_losses = [], [], []
        for _, _, tensors in self._steps:
            ce = tensors["ce"]
            if tensors["kd"] is None:
                losses.append(ce)
                teachers.append(torch.zeros_like(ce, dtype=torch.bool))
            else:
                losses.append(tensors["ce_weight"] * ce + tensors["kd_weight"] * tensors["kd"])
                teachers.append(~torch.isfinite(tensors["sigma"]))
            step_loss = tensors["loss"]
            step_losses.append(step_loss.reshape(1).float() if step_loss is not None else ce.new_zeros(1))
        return ~torch.isfinite(torch.cat(losses)), torch.cat(teachers), ~torch.isfinite(torch.cat(step_losses))

    def any_bad(self, device: torch.device) -> torch.Tensor:
        """0-d int tensor on ``device``: 1 if any kept sample had a non-finite loss or teacher logits, or a step a
        non-finite loss (no sync)."""
        if not self._steps:
            return torch.zeros((), dtype=torch.int64, device=device)
        bad_loss, bad_teacher, bad_steps = self._bad()
        flag = (bad_loss | bad_teacher).any() | bad_steps.any()
        return flag.to(device=device, dtype=torch.int64)

    def first_bad(self) -> NonFinite | None:
        """The first kept step with a non-finite value (host sync), or ``None``. Its samples are those whose own
        loss or teacher logits were not finite, or the whole batch where only the step's loss was."""
        if not self._steps:
            return None
        bad_loss, bad_teacher, bad_steps = (values.cpu() for values in self._bad())
        sizes = [len(tensors["ce"]) for _, _, tensors in self._steps]
        rows = zip(self._steps, bad_loss.split(sizes), bad_teacher.split(sizes), bad_steps.tolist(), strict=True)
        for (step, epoch, tensors), loss_rows, teacher_rows, bad_step in rows:
            # Teacher rows first: a non-finite teacher row makes that sample's loss non-finite too.
            for what, chosen in (("teacher logits", teacher_rows), ("loss", loss_rows | teacher_rows)):
                if chosen.any():
                    return NonFinite(step, epoch, what, sorted(tensors["index"].cpu()[chosen].tolist()))
            if bad_step:
                return NonFinite(step, epoch, "loss", sorted(tensors["index"].cpu().tolist()))
        return None


def agree_across_ranks(local: NonFinite | None, device: torch.device) -> NonFinite:
    """The globally first offending step, with the samples of every rank at that step (collective: call it on
    every rank, after the ranks agreed that one of them saw a non-finite value)."""
    import torch.distributed as dist

    none = 2**62
    step = torch.tensor(local.step if local is not None else none, device=device)
    dist.all_reduce(step, op=dist.ReduceOp.MIN)
    mine = local if local is not None and local.step == int(step) else None
    epoch, teacher, count = (mine.epoch, int(mine.what == "teacher logits"), len(mine.samples)) if mine else (-1, 0, 0)
    facts = torch.tensor([epoch, teacher, count], device=device)
    dist.all_reduce(facts, op=dist.ReduceOp.MAX)
    epoch, teacher, longest = (int(value) for value in facts.tolist())
    padded = torch.full((max(longest, 1),), -1, dtype=torch.int64, device=device)
    if mine is not None:
        padded[: len(mine.samples)] = torch.tensor(mine.samples, dtype=torch.int64, device=device)
    gathered = [torch.empty_like(padded) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, padded)
    samples = sorted({int(index) for index in torch.cat(gathered).tolist() if index >= 0})
    return NonFinite(int(step), epoch, "teacher logits" if teacher else "loss", samples)
