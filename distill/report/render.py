"""The report's table as ``results.csv`` (every number, full precision) and ``results.md`` (rounded, with notes)."""

from __future__ import annotations

import csv
import io
import math

from distill.report.table import GRID_BEST, GRID_MEAN, Table

CSV_COLUMNS = (
    "configuration", "kind", "selected", "n_seeds", "seeds", "test_acc1_mean", "test_acc1_std", "val_acc1_mean",
    "val_acc1_std", "spread_over_T", "baseline", "difference", "ci95_low", "ci95_high", "p_value", "test", "df",
)  # fmt: skip


def csv_text(table: Table, baseline: str | None) -> str:
    """``results.csv``: one line per row; accuracies and differences in percent (points); empty = not defined."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS[:2], *table.axis_names, *CSV_COLUMNS[2:]])
    for row in table.rows:
        test_mean, test_std = row.test_mean_std
        val_mean, val_std = row.val_mean_std
        c = row.comparison
        if c is not None:
            compared = [c.difference, c.ci_low, c.ci_high, c.p_value, c.test, c.df]
        else:
            compared = ["", "", "", "", "baseline" if row.name == baseline else "", ""]
        cells = [
            row.name, row.kind, *(row.settings.get(name, "") for name in table.axis_names), row.selected,
            len(row.test), " ".join(str(seed) for seed in sorted(row.test)), test_mean, test_std, val_mean,
            val_std, row.spread_over_T, baseline, *compared,
        ]  # fmt: skip
        writer.writerow([_csv_cell(cell) for cell in cells])
    return buffer.getvalue()


def markdown_text(table: Table, baseline: str | None, title: str, figure: str | None) -> str:
    """``results.md``: the table, the figure and what every number is."""
    against = f"vs {baseline}" if baseline else "vs baseline"
    lines = [
        f"# {title}",
        "",
        f"| configuration | seeds | test top-1 (%) | val top-1 (%) | {against} (points) | 95% CI | p | test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table.rows:
        test_mean, test_std = row.test_mean_std
        if row.comparison is None:
            compared = ["baseline" if row.name == baseline else "", "", "", ""]
        elif not row.comparison.tested:
            compared = [f"{row.comparison.difference:+.2f}", "n/a", "n/a", row.comparison.test.removeprefix("n/a: ")]
        else:
            c = row.comparison
            interval = f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]"
            compared = [f"{c.difference:+.2f}", interval, _p(c.p_value), f"{c.test}, df {c.df:.3g}"]
        cells = [row.display_name, str(len(row.test)), _mean_std(test_mean, test_std), _number(row.val_mean_std[0])]
        lines.append("| " + " | ".join([*cells, *compared]) + " |")
    lines += ["", f"![accuracy per configuration]({figure})" if figure else "", ""]
    lines += [
        "Every number is read from the runs' own `metrics.json` (written by `distill fit` at its end from the",
        "logged metrics): test top-1 is `test/acc1` of the last-epoch student, val top-1 is `val/acc1` of the",
        "last validation. Values are mean +- standard deviation over seeds (sample std, ddof=1); n/a with one seed.",
    ]
    if baseline:
        lines += [
            f"Against `{baseline}`: difference of the means in percentage points, its 95% confidence interval and",
            "the two-sided p-value of a paired t-test over seeds when both rows have the same seeds (df = n-1),",
            "otherwise of Welch's t-test (Welch-Satterthwaite df), computed with scipy.stats.",
        ]
    if any(row.kind == GRID_MEAN for row in table.rows):
        spreads = "; ".join(
            f"{row.name}: {_number(row.spread_over_T)}" for row in table.rows if row.kind == GRID_MEAN
        )
        lines += [
            f"`{GRID_MEAN}`: per seed, the mean over the grid's temperatures; its mean is the mean over T of the",
            "per-T means and its +- the std over seeds of the per-seed grid averages (seeds that every T finished).",
            f"Std over T of the per-T means: {spreads}.",
            f"`{GRID_BEST}`: the temperature with the best mean validation top-1 (never chosen on test), shown",
            "with its test values.",
        ]
    if table.unfinished:
        lines += ["", f"Not finished ({len(table.unfinished)}, left out): " + ", ".join(table.unfinished) + "."]
    return "\n".join(lines) + "\n"


def _csv_cell(value):
    """Empty for a value that is not defined (None, NaN)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "no finished run"
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _number(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"
