"""The ``distill-report`` command: a sweep folder's results table, statistics and figure.

    distill-report SWEEP_DIR [--baseline NAME]
    python -m distill.report SWEEP_DIR [--baseline NAME]

writes ``results.csv``, ``results.md`` and ``results.png`` into SWEEP_DIR (``distill-sweep`` also
runs it at the end of every sweep). NAME is a row of the table, e.g. ``T=4.0``, ``grid best (val)``
or ``sigma_anchored``; without it, the sweep's own ``--baseline`` if it was given one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill.atomic_file import write_atomically
from distill.errors import DistillError
from distill.report.figure import figure_png
from distill.report.render import csv_text, markdown_text
from distill.report.statistics import compare
from distill.report.table import collect
from distill.sweep.folder import read_sweep_file

RESULT_FILES = ("results.csv", "results.md", "results.png")


def build_report(sweep_dir: str | Path, baseline: str | None = None) -> list[Path]:
    """Write the three result files of ``sweep_dir``; return their paths.

    Raises:
        DistillError: not a sweep folder, no finished run yet, or ``baseline`` not a row name.
    """
    sweep_dir = Path(sweep_dir)
    record = read_sweep_file(sweep_dir)
    baseline = baseline or record.get("baseline")
    table = collect(sweep_dir)
    if not any(row.test for row in table.rows):
        raise DistillError(f"{sweep_dir}: no run of this sweep has finished with a test yet; nothing to report")
    if baseline:
        reference = table.row(baseline)
        for row in table.rows:
            if row is not reference:
                row.comparison = compare(row.test, reference.test)
    title = f"Sweep {sweep_dir.name}: student test top-1"
    csv_path, markdown_path, figure_path = (sweep_dir / name for name in RESULT_FILES)
    write_atomically(figure_path, figure_png(table, baseline, title))
    write_atomically(csv_path, csv_text(table, baseline))
    write_atomically(markdown_path, markdown_text(table, baseline, title, figure_path.name))
    return [csv_path, markdown_path, figure_path]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``distill-report``; user errors print one line and exit with status 2."""
    parser = argparse.ArgumentParser(
        prog="distill-report",
        description="Per-configuration mean +- std of test top-1 over seeds, grid mean and grid best (val), "
        "differences against a baseline row with 95% CI and p-value; results.csv, results.md, results.png.",
    )
    parser.add_argument("sweep_dir", type=Path, help="a folder made by distill-sweep")
    parser.add_argument("--baseline", help="the row the others are compared with, e.g. 'grid best (val)'")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        paths = build_report(args.sweep_dir, args.baseline)
    except DistillError as error:
        print(f"distill-report: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"distill-report: wrote {', '.join(str(path) for path in paths)}", file=sys.stderr)
    return 0
