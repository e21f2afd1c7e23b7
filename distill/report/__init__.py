"""``distill-report``: what a sweep found, as a table with seed statistics and a figure.

``build_report(sweep_dir, baseline)`` writes ``results.csv``, ``results.md`` and ``results.png``;
``main`` is the command. See ``distill.report.command``.
"""

from distill.report.command import build_report, main

__all__ = ["build_report", "main"]
