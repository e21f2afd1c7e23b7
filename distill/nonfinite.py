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
        # Most of them come detached already; a detach is still a new tensor (a few us a step in a run).
        kept = {name: value.detach() if value is not None and value.requires_grad else value
                for name, value in tensors.items()}  # fmt: skip
        self._steps.append((step, epoch, kept))

    def __len__(self) -> int:
        return len(self._steps)

    def clear(self) -> None:
        self._steps = []

    def _columns(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(per-sample loss [N], teacher logit std [N] or None, step losses [steps])`` over everything kept, in
        order: one ``cat`` a column for all the steps, then the loss arithmetic once. That is about 15 kernels a
        check whatever the number of steps, where the arithmetic step by step took five a step (measured in a
        digits run, 5 checks an epoch: 0.52-0.58 ms an epoch against 0.74 ms). Steps without distillation (no
        ``kd``) have no teacher: their std is read as 0 (finite)."""
        kept = [tensors for _, _, tensors in self._steps]
        ce = torch.cat([tensors["ce"] for tensors in kept])
        distilled = [tensors["kd"] is not None for tensors in kept]
        if all(distilled):
            weights = [torch.cat([tensors[name] for tensors in kept]) for name in ("ce_weight", "kd_weight", "kd")]
            losses = weights[0] * ce + weights[1] * weights[2]
            sigma = torch.cat([tensors["sigma"] for tensors in kept])
        elif not any(distilled):
            losses, sigma = ce, None
        else:  # a mix (not made by DistillationModule): each step's loss on its own
            losses = torch.cat([tensors["ce_weight"] * tensors["ce"] + tensors["kd_weight"] * tensors["kd"]
                                if tensors["kd"] is not None else tensors["ce"] for tensors in kept])  # fmt: skip
            sigma = torch.cat([tensors["sigma"] if tensors["kd"] is not None else torch.zeros_like(tensors["ce"])
                               for tensors in kept])  # fmt: skip
        step_losses = torch.stack([tensors["loss"].reshape(()) if tensors["loss"] is not None
                                   else tensors["ce"].new_zeros(()) for tensors in kept]).float()  # fmt: skip
        return losses, sigma, step_losses

    def _bad(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(bad loss [N], bad teacher [N], bad step loss [steps])`` over everything kept, in order (no sync)."""
        losses, sigma, step_losses = self._columns()
        bad_teacher = ~torch.isfinite(sigma) if sigma is not None else torch.zeros_like(losses, dtype=torch.bool)
        return ~torch.isfinite(losses), bad_teacher, ~torch.isfinite(step_losses)

    def any_bad(self, device: torch.device) -> torch.Tensor:
        """0-d int tensor on ``device``: 1 if any kept sample had a non-finite loss or teacher logits, or a step a
        non-finite loss (no sync)."""
        if not self._steps:
            return torch.zeros((), dtype=torch.int64, device=device)
        losses, sigma, step_losses = self._columns()
        values = torch.cat([losses, step_losses] if sigma is None else [losses, step_losses, sigma])  # one check
        return torch.isfinite(values).all().logical_not().to(device=device, dtype=torch.int64)

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
