"""``python -m distill.study run|document``: see ``distill.study``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill.errors import DistillError
from distill.study.document import write_document
from distill.study.plans import STUDIES
from distill.study.runner import run_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill.study",
                                     description="Run the studies or regenerate a document.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run (or resume) studies, then write their results and documents")
    run.add_argument("--study", nargs="+", choices=sorted(STUDIES), default=list(STUDIES))
    run.add_argument("--quick", action="store_true",
                     help="CE, the KD grid, TALS and Block-KD, 2 seeds, a tiny budget: the code path only")
    run.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    run.add_argument("--runs", type=Path, default=Path("studies"), help="where the sweep folders go")
    run.add_argument("--out", type=Path, default=Path("docs/results"), help="where results and documents go")
    document = commands.add_parser("document", help="regenerate <folder>.md from a study's results folder")
    document.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "document":
            print(write_document(args.folder))
            return 0
        for name in args.study:
            print(run_study(STUDIES[name], args.runs, args.out, quick=args.quick, jobs=args.jobs))
    except DistillError as error:
        print(f"distill.study: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
