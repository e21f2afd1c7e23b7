"""``results.png``: test top-1 per configuration, mean with +-1 std error bars and every seed as a dot."""

from __future__ import annotations

import io

from matplotlib.figure import Figure  # no pyplot: no global backend, works headless (Agg canvas)

from distill.report.table import RUN, Table


def figure_png(table: Table, baseline: str | None, title: str) -> bytes:
    """The figure as PNG bytes; rows without a finished run are left out, the baseline's mean is a dashed line."""
    rows = [row for row in table.rows if row.test]
    figure = Figure(figsize=(max(4.0, 0.8 * len(rows) + 1.5), 4.2), layout="constrained")
    axes = figure.add_subplot()
    for position, row in enumerate(rows):
        mean, std = row.test_mean_std
        colour = "tab:blue" if row.kind == RUN else "tab:orange"
        axes.errorbar(position, mean, yerr=None if std != std else std, fmt="o", color=colour, capsize=4, markersize=7)
        values = list(row.test.values())
        axes.scatter([position + 0.12] * len(values), values, s=12, color=colour, alpha=0.5, linewidths=0)
        if row.name == baseline:
            axes.axhline(mean, color="grey", linestyle="--", linewidth=1, label=f"baseline: {baseline}")
    axes.set_xticks(range(len(rows)), [row.display_name for row in rows], rotation=30, ha="right")
    axes.set_ylabel("student test top-1 (%)")
    axes.set_title(f"{title}\nmean ± std over seeds (dots: single seeds)", fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    if baseline:
        axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()
