"""Pure per-sample loss functions: no Lightning, no reduction, shapes ``[B, C] -> [B]``."""

from distill.losses.dkd import dkd
from distill.losses.kl import kl_div
from distill.losses.power_sum import power_sum

__all__ = ["dkd", "kl_div", "power_sum"]
