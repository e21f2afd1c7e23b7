"""``python -m distill.experiments``: the published experiments (``distill.experiments``) by name.

    python -m distill.experiments list                     # every name with its published top-1 (%)
    python -m distill.experiments run cifar100/vgg13-vgg8/dkd [distill fit arguments ...]
    python -m distill.experiments run cifar100/ResNet34-ResNet18/grid [distill-sweep options --] [distill fit arguments]
    python -m distill.experiments readme                   # the README's table (``readme_table()``)

``run`` becomes ``distill fit`` with the experiment's layers (``Experiment.layers()``, in order), then the arguments.
A grid of temperatures becomes ``distill-sweep`` with the layers and the arguments as every run's (after the sweep's
``--``); where the arguments hold a ``--`` themselves, those before it are the sweep's own options (``--seeds 3``,
``--dry_run``). ``make experiment NAME=<name> [ARGS=...]`` is ``run``; ``make experiments`` is ``list``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys

from distill.errors import DistillError
from distill.experiments import EXPERIMENTS, Experiment, readme_table

PROGRAM = "python -m distill.experiments"


def experiment_named(name: str) -> Experiment:
    """The experiment called ``name`` (``<data>/<pair>/<method>``); else a ``DistillError`` naming close matches."""
    by_name = {experiment.name: experiment for experiment in EXPERIMENTS}
    if name in by_name:
        return by_name[name]
    close = difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "no name is close"
    raise DistillError(f"unknown experiment {name!r}: {hint} (every name: {PROGRAM} list, or make experiments)")


def run_command(experiment: Experiment, arguments: list[str]) -> list[str]:
    """The command line that runs ``experiment``: the installed ``distill fit`` (or, for a grid, ``distill-sweep``)
    of this environment, ``--config=<layer>`` for each of ``experiment.layers()``, then ``arguments`` (for a grid:
    those before a ``--`` of their own as the sweep's options, the rest after the sweep's ``--``)."""
    from distill.sweep.point import distill_command, sweep_command  # here: it imports Lightning, `list` need not

    layers = [f"--config={layer}" for layer in experiment.layers()]
    if not experiment.is_sweep:
        if "--" in arguments:
            raise DistillError(
                f"{experiment.name} is one run: `--` separates distill-sweep's options, which only a grid takes; "
                "give distill fit arguments alone"
            )
        return [*distill_command(), "fit", *layers, *arguments]
    options, fit_arguments = [], arguments
    if "--" in arguments:
        cut = arguments.index("--")
        options, fit_arguments = arguments[:cut], arguments[cut + 1 :]
    return [*sweep_command(), *layers, *options, *(["--", *fit_arguments] if fit_arguments else [])]


def list_lines() -> list[str]:
    """One line per experiment, in ``EXPERIMENTS`` order: its name, then its published top-1 (``—``: none)."""
    width = max(len(experiment.name) for experiment in EXPERIMENTS)
    return [f"{experiment.name:<{width}}  {experiment.published or '—'}" for experiment in EXPERIMENTS]


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """The subcommand and its values; ``run``'s arguments are ``argv`` after the name exactly as given (argparse
    would drop a ``--`` that directly follows the name)."""
    parser = argparse.ArgumentParser(prog=PROGRAM, description="The published experiments by name.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every experiment's name with its published top-1 (%%)")
    run = commands.add_parser(
        "run", help="run one experiment: distill fit with its layers (a grid: distill-sweep)",
        usage=f"{PROGRAM} run [-h] name [distill fit arguments ...]",
        epilog="Arguments after the name go to distill fit, e.g. --print_config or --trainer.precision=bf16-mixed. "
        "A grid takes distill-sweep's options before a `--`: run <grid> --seeds 3 -- --trainer.max_epochs=5",
    )  # fmt: skip
    run.add_argument("name", help="<data>/<pair>/<method>, as `list` prints it")
    commands.add_parser("readme", help="print the README's table of published numbers")
    is_run = argv[:1] == ["run"]
    args = parser.parse_args(argv[:2] if is_run else argv)
    if is_run:
        args.arguments = argv[2:]
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point; an unknown name prints one line and returns 2. ``run`` does not return: the process becomes the
    installed command (``os.execvp``) rather than calling its entry point here, because Lightning starts the other
    GPUs' processes of a DDP run by re-running ``python -m <this module>`` with ``sys.argv``; exec keeps the process
    id, arguments, signals and exit status exactly those of typing the command."""
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "list":
            print("\n".join(list_lines()))
        elif args.command == "readme":
            print(readme_table())
        else:
            command = run_command(experiment_named(args.name), args.arguments)
            sys.stdout.flush()
            os.execvp(command[0], command)
    except DistillError as error:
        print(f"distill.experiments: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
