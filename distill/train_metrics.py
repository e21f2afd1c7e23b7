"""The training step's scalars, kept per step and reduced once per logging interval.

Lightning's ``self.log`` does a few hundred microseconds of bookkeeping per call; five calls a step
were 40% of a digits epoch (measured: 1.48x the same run with logging off). The step instead hands its
0-d scalars to a window, which only keeps references to them (no kernel, no host sync), and the module
publishes the window's means once every ``log_every_n_steps`` steps, which is also when Lightning writes
to the loggers. The logged value is the mean over the window's steps (smoother than the last step's value).
"""

from __future__ import annotations

import torch

# Means over steps (each step's value is already a batch mean). ``loss_kd`` is ``loss - loss_ce``.
STEP_MEANS = ("loss", "loss_ce", "loss_kd")
# The share of correct top-1 predictions among the samples seen.
SAMPLE_MEANS = ("acc1",)
# Loss dtypes a count of correct predictions can be stacked with and stay exact (float32: counts below 2**24).
EXACT_FOR_COUNTS = (torch.float32, torch.float64)


class TrainMetricWindow:
    """The training scalars of the steps since the last ``pop_means``.

    A step's ``add`` only keeps its 0-d tensors (the losses detached): no kernel runs for logging in the step.
    ``pop_means`` reads the whole window with one ``stack`` and one copy to the host, and sums it there in
    float64. Measured inside a digits run (``make bench``'s ``framework.digits_logging`` setup), the earlier
    design's ``stack`` and in-place float64 add per step cost 39 us a step, and each tensor op there costs
    20-50 us: the fewer ops an epoch, the cheaper the logging.

    Args:
        extra_names: names of extra per-step scalars (a composed method's), averaged over steps like the losses.
    """

    def __init__(self, extra_names: tuple[str, ...] = ()):
        self.extra_names = tuple(extra_names)
        self._losses: list[torch.Tensor] = []  # per step: loss, loss_ce, *extra (0-d, detached)
        self._correct: list[torch.Tensor] = []  # per step: the 0-d count of correct top-1 predictions
        self.steps_since_pop = 0  # Python counts: checking for an empty window needs no host sync
        self.samples_since_pop = 0

    @torch.no_grad()
    def add(self, loss: torch.Tensor, loss_ce: torch.Tensor, correct: torch.Tensor, batch_size: int,
            extra: dict[str, torch.Tensor] | None = None) -> None:  # fmt: skip
        """Add one step: its 0-d loss and task (cross-entropy) part (the distillation part is their difference),
        the 0-d number of correct top-1 predictions among ``batch_size`` samples and, for every name in
        ``extra_names``, its 0-d value in ``extra``. The tensors must not be modified in place afterwards (a
        step's fresh results are not)."""
        # Detached so that the window never keeps a step's autograd graph alive.
        self._losses += (loss.detach(), loss_ce.detach())
        self._losses += (extra[name].detach() for name in self.extra_names)
        # Stacked with the losses in ``sums``; a count among bf16 losses would stack to bf16 (inexact above 256).
        self._correct.append(correct if loss.dtype in EXACT_FOR_COUNTS else correct.double())
        self.steps_since_pop += 1
        self.samples_since_pop += int(batch_size)

    def sums(self) -> list[float]:
        """``[loss, loss_ce, loss_kd, correct top-1, *extra]`` summed over the window's steps (float64; zeros for
        an empty window); one ``stack`` and one host sync."""
        width = 2 + len(self.extra_names)
        values = torch.stack(self._losses + self._correct).tolist() if self._correct else []
        steps = len(self._correct)
        # Summed as Python floats (float64), whatever the steps' dtype.
        columns = [sum(values[column : steps * width : width]) for column in range(width)]
        correct = sum(values[steps * width :])
        return [columns[0], columns[1], columns[0] - columns[1], correct, *columns[2:]]

    def pop_means(self) -> dict[str, float]:
        """The window's means as floats (``train/``-less names), then an empty window; one host sync."""
        steps, samples = max(self.steps_since_pop, 1), max(self.samples_since_pop, 1)
        divisors = [steps] * len(STEP_MEANS) + [samples] + [steps] * len(self.extra_names)
        sums = self.sums()
        self._losses.clear()
        self._correct.clear()
        self.steps_since_pop = self.samples_since_pop = 0
        names = STEP_MEANS + SAMPLE_MEANS + self.extra_names
        return {name: total / divisor for name, total, divisor in zip(names, sums, divisors)}
