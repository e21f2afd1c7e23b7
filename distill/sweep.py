"""The ``distill-sweep`` command: expand a ``GridTemperature`` config into one ``FixedTemperature`` run per value.

    distill-sweep --config configs/policies/grid.yaml                 # the runs, one after another
    distill-sweep --config configs/policies/grid.yaml --dry_run       # the commands, one a line
    distill-sweep --config configs/policies/grid.yaml -- --trainer.max_epochs=5   # passed to every run

For each grid value it writes an override config ``sweeps/<name>-<run id>/T<value>.yaml`` (a fresh
folder per sweep; nothing is overwritten) that replaces the policy by ``FixedTemperature(T=value, ...)``
and names the run ``<name>/T<value>``. Each run is then an ordinary

    distill fit --config X.yaml --config sweeps/<name>-<run id>/T<value>.yaml [extra arguments]

with its own folder ``runs/<name>/T<value>/<run id>``. The commands are also written to
``commands.txt`` in the sweep folder, so a SLURM array can run line ``$SLURM_ARRAY_TASK_ID``.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from distill.errors import DistillError
from distill.policies import FixedTemperature, GridTemperature


def read_grid(config: Path) -> tuple[GridTemperature, str]:
    """The config's ``GridTemperature`` and the sweep's name (the logger's name, else the file's stem)."""
    if not config.is_file():
        raise DistillError(f"config file not found: {config}")
    try:
        settings = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError as error:
        raise DistillError(f"{config} is not valid YAML: {' '.join(str(error).split())}") from None
    policy = (settings.get("model") or {}).get("temperature_policy") or {}
    if not isinstance(policy, dict):  # a bare class name
        policy = {"class_path": str(policy)}
    class_path = policy.get("class_path", "")
    if class_path.split(".")[-1] != GridTemperature.__name__:
        found = class_path or "no temperature_policy (the default, SigmaAnchoredTemperature)"
        raise DistillError(
            f"{config}: model.temperature_policy is {found}, not a GridTemperature; distill-sweep expands a "
            f"grid of temperatures, train any other policy with `distill fit --config {config}`"
        )
    try:
        grid = GridTemperature(**(policy.get("init_args") or {}))
    except (TypeError, ValueError) as error:
        raise DistillError(f"{config}: model.temperature_policy.init_args: {error}") from None
    logger = (settings.get("trainer") or {}).get("logger")
    name = logger.get("init_args", {}).get("name") if isinstance(logger, dict) else None
    return grid, str(name or config.stem)


def override(policy: FixedTemperature, run_name: str, source: Path) -> str:
    """The YAML text of one grid point's override config."""
    settings = {
        "model": {
            "temperature_policy": {
                "class_path": "distill.policies.FixedTemperature",
                "init_args": {
                    "T": policy.T,
                    "ce_weight": policy.ce_weight,
                    "kd_weight": policy.kd_weight,
                    "standardize": policy.standardize,
                },
            }
        },
        "trainer": {"logger": {"init_args": {"name": run_name}}},
    }
    header = f"# distill-sweep: the T = {policy.T} run of the grid in {source}; layered on it with a second --config.\n"
    return header + yaml.safe_dump(settings, sort_keys=False)


def distill_command() -> list[str]:
    """The ``distill`` of this environment: plain ``distill`` where PATH finds that one, else its full path
    (so that printed commands work without an activated venv, e.g. in a SLURM job), else ``python -m``."""
    script = Path(sys.executable).parent / "distill"
    if not script.is_file():
        return [sys.executable, "-m", "distill.cli"]
    found = shutil.which("distill")
    return ["distill"] if found and Path(found).resolve() == script.resolve() else [str(script)]


def plan(config: Path, sweep_dir: Path, extra: list[str]) -> tuple[Path, list[tuple[str, list[str]]]]:
    """Write the sweep folder (override configs and ``commands.txt``); return it and ``(label, command)`` pairs."""
    grid, name = read_grid(config)
    folder = sweep_dir / f"{name.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    folder.mkdir(parents=True, exist_ok=False)
    runs = []
    for policy in grid.expand():
        label = f"T{policy.T}"
        path = folder / f"{label}.yaml"
        try:
            with path.open("x") as file:  # "x": never overwrite
                file.write(override(policy, f"{name}/{label}", config))
        except FileExistsError:
            raise DistillError(f"{config}: the grid lists T = {policy.T} twice") from None
        runs.append((label, [*distill_command(), "fit", f"--config={config}", f"--config={path}", *extra]))
    (folder / "commands.txt").write_text("".join(shlex.join(command) + "\n" for _, command in runs))
    return folder, runs


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Split ``argv`` at the first ``--``: the sweep's options before it, every run's extra arguments after."""
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="distill-sweep",
        description="Expand a GridTemperature config into one FixedTemperature `distill fit` run per value.",
        epilog="Arguments after `--` are passed to every run, e.g. `-- --trainer.max_epochs=5`.",
    )
    parser.add_argument(
        "--config", required=True, type=Path, help="a config whose model.temperature_policy is a GridTemperature"
    )
    parser.add_argument(
        "--sweep_dir", type=Path, default=Path("sweeps"), help="where the sweep's folder goes (default: sweeps)"
    )
    parser.add_argument(
        "--dry_run",
        "--print_commands",
        action="store_true",
        help="write the override configs and print the commands, one a line (for a SLURM array); run nothing",
    )
    return parser.parse_args(argv), extra


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``distill-sweep``; user errors print one line and exit with status 2."""
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        folder, runs = plan(args.config, args.sweep_dir, extra)
    except DistillError as error:
        print(f"distill-sweep: error: {error}", file=sys.stderr)
        sys.exit(2)
    if args.dry_run:
        print(f"distill-sweep: {len(runs)} runs written to {folder}", file=sys.stderr)
        for _, command in runs:
            print(shlex.join(command), flush=True)
        return 0
    for number, (label, command) in enumerate(runs, start=1):
        print(f"distill-sweep: run {number}/{len(runs)} ({label}): {shlex.join(command)}", file=sys.stderr, flush=True)
        code = subprocess.run(command).returncode
        if code != 0:
            print(f"distill-sweep: error: run {label} failed with exit status {code}; stopping", file=sys.stderr)
            sys.exit(code)
    print(f"distill-sweep: {len(runs)} runs done; override configs and commands in {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
