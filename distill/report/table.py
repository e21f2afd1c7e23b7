"""The report's rows, built from a sweep folder: one per configuration, plus two per grid.

Every number comes from the runs' own ``metrics.json`` (``distill.run_metrics``): test top-1 is
``test/acc1`` of the post-fit test, validation top-1 is ``val/acc1`` of the last validation, both as
percentages. Rows:

- a configuration: its runs' values by seed;
- ``grid mean`` (per grid): for each seed that every temperature of the grid finished, the mean over
  the temperatures of that seed's values; its mean is then the mean over T of the per-T means (when
  every T has the same seeds) and its +- is the std over seeds of the per-seed grid averages;
  ``spread_over_T`` is the std over T of the per-T means;
- ``grid best (val)`` (per grid): the temperature with the best mean validation top-1 (test is never
  looked at; a tie goes to the first in the grid's order), with that temperature's values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.errors import DistillError
from distill.report.statistics import Comparison, mean_std
from distill.run_metrics import read_run_metrics
from distill.sweep.execute import failure_reason
from distill.sweep.folder import read_sweep_file, run_dir

RUN, GRID_MEAN, GRID_BEST = "run", "grid mean", "grid best (val)"


@dataclass
class Row:
    """One line of the table. ``test`` and ``val`` are ``{seed: top-1 in %}``."""

    name: str
    kind: str
    settings: dict[str, str]
    test: dict[int, float] = field(default_factory=dict)
    val: dict[int, float] = field(default_factory=dict)
    selected: str | None = None
    selected_T: str | None = None
    spread_over_T: float | None = None
    comparison: Comparison | None = None

    @property
    def display_name(self) -> str:
        """The name, with the chosen temperature for a ``grid best (val)`` row."""
        return f"{self.name}: T={self.selected_T}" if self.selected_T else self.name

    @property
    def test_mean_std(self) -> tuple[float, float]:
        return mean_std([self.test[seed] for seed in sorted(self.test)])

    @property
    def val_mean_std(self) -> tuple[float, float]:
        return mean_std([self.val[seed] for seed in sorted(self.val)])


@dataclass
class Table:
    """The rows, the sweep's ``--set`` axis names (columns), and the points without a finished run."""

    rows: list[Row]
    axis_names: list[str]
    unfinished: list[str]

    def row(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        choices = ", ".join(repr(row.name) for row in self.rows)
        raise DistillError(f"--baseline {name!r} is not a row of this sweep; choose one of: {choices}")


def collect(sweep_dir: str | os.PathLike) -> Table:
    """Read ``sweep.yaml`` and every point's ``metrics.json`` into a ``Table`` (in the sweep's order)."""
    sweep_dir = Path(sweep_dir)
    record = read_sweep_file(sweep_dir)
    rows: dict[str, Row] = {}
    groups: dict[str, list[Row]] = {}
    unfinished = []
    for point in record["points"]:
        label, seed = point["label"], int(point["seed"])
        row = rows.setdefault(label, Row(label, RUN, dict(point["settings"])))
        if point.get("group") is not None and row not in groups.setdefault(point["group"], []):
            groups[point["group"]].append(row)
        metrics = read_run_metrics(run_dir(sweep_dir, label, seed))
        if metrics is None:
            reason = failure_reason(sweep_dir, label, seed)
            unfinished.append(f"{label}/seed{seed}" + (f" (failed: {reason})" if reason else ""))
            continue
        values = metrics["metrics"]
        if "test/acc1" in values:
            row.test[seed] = 100 * values["test/acc1"]
        if "val/acc1" in values:
            row.val[seed] = 100 * values["val/acc1"]
    table_rows = []
    for row in rows.values():
        table_rows.append(row)
        for group, members in groups.items():
            if row is members[-1]:
                # One grid: plain "grid mean"; several: "<what else differs>: grid mean".
                table_rows.extend(grid_rows(group if len(groups) > 1 else "", members))
    names = [axis["name"] for axis in record["set"]]
    if groups:
        names.append("T")
    return Table(table_rows, names, unfinished)


def grid_rows(group: str, members: list[Row]) -> list[Row]:
    """The ``grid mean`` and ``grid best (val)`` rows of one grid (its temperatures' rows, in grid order),
    named ``<group>: grid mean`` when ``group`` is not empty."""
    prefix = f"{group}: " if group else ""
    settings = {key: value for key, value in members[0].settings.items() if key != "T"}
    mean = Row(f"{prefix}{GRID_MEAN}", GRID_MEAN, settings)
    for split in ("test", "val"):
        per_member = [getattr(member, split) for member in members]
        common = set.intersection(*(set(values) for values in per_member))
        setattr(mean, split, {seed: float(np.mean([values[seed] for values in per_member])) for seed in sorted(common)})
    per_t_means = [member.test_mean_std[0] for member in members if member.test]
    mean.spread_over_T = mean_std(per_t_means)[1]
    best = Row(f"{prefix}{GRID_BEST}", GRID_BEST, settings)
    candidates = [member for member in members if member.val]
    if candidates:
        # max() keeps the first of equal values: ties go to the grid's order.
        chosen = max(candidates, key=lambda member: member.val_mean_std[0])
        best.test, best.val, best.selected = dict(chosen.test), dict(chosen.val), chosen.name
        best.selected_T = chosen.settings["T"]
    return [mean, best]
