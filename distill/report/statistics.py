"""Seed statistics of the report: mean and sample std, and a configuration against the baseline.

A configuration's values are ``{seed: value}``. Against the baseline's:

- the same seeds (at least 2): a paired t-test on the per-seed differences
  (``scipy.stats.ttest_rel``), df = n - 1;
- otherwise: Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``), df by Welch-Satterthwaite;
- the difference is mean(row) - mean(baseline) and its 95% confidence interval is the one scipy's
  result gives for that test (``confidence_interval``: difference +- t(0.975, df) x standard error);
- with fewer than 2 values on a side, or no variance at all (every paired difference equal, or both
  sides constant), there is no test: the fields are NaN and ``test`` says why.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

PAIRED = "paired t"
WELCH = "Welch t"


@dataclass(frozen=True)
class Comparison:
    """A row against the baseline: ``difference`` = mean(row) - mean(baseline), its CI, p-value, test, df."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    df: float

    @property
    def tested(self) -> bool:
        return self.test in (PAIRED, WELCH)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of ``values``; NaN where undefined (n = 0, or n = 1 for std)."""
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean()) if array.size else math.nan
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return mean, std


def compare(row: Mapping[int, float], baseline: Mapping[int, float], confidence: float = 0.95) -> Comparison:
    """``row`` against ``baseline`` (each ``{seed: value}``): paired over seeds when both have the same
    seeds, Welch otherwise (see the module docstring)."""
    difference = mean_std(list(row.values()))[0] - mean_std(list(baseline.values()))[0]
    if len(row) < 2 or len(baseline) < 2:
        return Comparison(difference, math.nan, math.nan, math.nan, "n/a: fewer than 2 seeds", math.nan)
    paired = set(row) == set(baseline)
    seeds = sorted(row)
    a = np.array([row[seed] for seed in seeds] if paired else list(row.values()), dtype=np.float64)
    b = np.array([baseline[seed] for seed in seeds] if paired else list(baseline.values()), dtype=np.float64)
    no_variance = np.ptp(a - b) == 0 if paired else (np.ptp(a) == 0 and np.ptp(b) == 0)
    if no_variance:
        return Comparison(difference, math.nan, math.nan, math.nan, "n/a: no variance", math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's precision note on nearly equal samples
        result = stats.ttest_rel(a, b) if paired else stats.ttest_ind(a, b, equal_var=False)
        interval = result.confidence_interval(confidence)
    return Comparison(
        difference, float(interval.low), float(interval.high), float(result.pvalue), PAIRED if paired else WELCH,
        float(result.df),
    )  # fmt: skip
