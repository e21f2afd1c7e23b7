"""A grid of fixed temperatures: one Hinton-KD run per value (the baseline TALS compares with)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from distill.errors import DistillError
from distill.policies.base import Temperatures, TemperaturePolicy
from distill.policies.fixed import FixedTemperature
from distill.validation import POLICY, fail, non_negative, positive


class GridTemperature(TemperaturePolicy):
    """A list of fixed temperatures, each trained as its own run; it cannot train by itself.

    ``distill-sweep --config X.yaml`` expands it into one ``FixedTemperature`` run per value
    (``expand()``); ``distill fit`` with a grid stops with a one-line error pointing there.

    Args:
        values: the temperatures of the grid.
        ce_weight, kd_weight, standardize: as ``FixedTemperature``, shared by every run.
    """

    def __init__(
        self,
        values: Sequence[float] = (1.0, 2.0, 4.0, 8.0),
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        standardize: bool = False,
    ):
        super().__init__()
        if isinstance(values, (str, bytes)) or not values:
            raise fail(f"{POLICY}.values", values, "a non-empty list of temperatures > 0, e.g. [1, 2, 4, 8]")
        self.values = tuple(positive(f"{POLICY}.values", value, "temperatures") for value in values)
        self.ce_weight = non_negative(f"{POLICY}.ce_weight", ce_weight, "a loss weight")
        self.kd_weight = non_negative(f"{POLICY}.kd_weight", kd_weight, "a loss weight")
        self.standardize = bool(standardize)

    def expand(self) -> list[FixedTemperature]:
        """One ``FixedTemperature`` per grid value, sharing the weights and ``standardize``."""
        return [FixedTemperature(T, self.ce_weight, self.kd_weight, self.standardize) for T in self.values]

    def forward(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor, epoch: int) -> Temperatures:
        raise DistillError(self.cannot_train_message())

    @staticmethod
    def cannot_train_message(config: str = "CONFIG.yaml") -> str:
        return (
            "GridTemperature is a sweep of runs, not one policy: run `distill-sweep --config "
            f"{config}` (one FixedTemperature run per value)"
        )

    def extra_repr(self) -> str:
        weights = f"ce_weight={self.ce_weight}, kd_weight={self.kd_weight}"
        return f"values={self.values}, {weights}, standardize={self.standardize}"
