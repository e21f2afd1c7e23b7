"""The ``distill-sweep`` command: plan a sweep folder, run (or submit) its points, write the report.

    distill-sweep --config A.yaml [--config B.yaml ...] [--set KEY=V1,V2 ...] [--seeds N | --seeds 0,3,7]
                  [--name NAME] [--jobs K] [--launcher slurm [--sbatch=OPTION ...]] [--baseline ROW]
                  [--dry_run] [-- extra distill fit arguments]
    distill-sweep --resume SWEEP_DIR [--jobs K] [--task I] [--launcher slurm] [--dry_run]

See ``distill.sweep`` for what a point is and ``docs/sweeps.md`` for the whole story.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import signal
import sys
import time
from pathlib import Path

from distill.atomic_file import write_atomically
from distill.errors import DistillError
from distill.report import build_report
from distill.report.table import collect
from distill.sweep import slurm
from distill.sweep.definition import Point, Sweep, safe_name
from distill.sweep.execute import Outcome, run_points, say
from distill.sweep.folder import COMMANDS_FILE, SWEEP_FILE, SWEEP_FORMAT, read_sweep_file, run_dir, write_sweep_file
from distill.sweep.point import State, fit_command, point_state, sweep_command, write_override

DEFINITION_OPTIONS = ("config", "set", "seeds", "name")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Split ``argv`` at the first ``--``: the sweep's options before it, every run's extra arguments after."""
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="distill-sweep",
        description="Cross config layers, --set lists, a GridTemperature's values and seeds into ordinary "
        "`distill fit` runs in one sweep folder; restartable; local or as a SLURM array; ends with distill-report.",
        epilog="Arguments after `--` are passed to every run, e.g. `-- --trainer.max_epochs=5`.",
    )
    parser.add_argument("--config", action="append", type=Path,
                        help="a config layer (repeatable, in order, as for distill fit)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2",
                        help="sweep a distill fit key over values (repeatable; KEY `config` sweeps a config layer)")
    parser.add_argument("--seeds", help="N (seeds 0..N-1) or a list such as 0,3,7 (default: the config's seed)")
    parser.add_argument("--name", help="the sweep folder's name; the same name again continues that sweep")
    parser.add_argument("--sweep_dir", type=Path, default=Path("sweeps"),
                        help="where sweep folders go (default: sweeps)")
    parser.add_argument("--resume", type=Path, metavar="SWEEP_DIR", help="continue the sweep in this folder")
    parser.add_argument("--jobs", type=int, default=1, metavar="K",
                        help="points run at a time on this machine (with --launcher slurm: array tasks at a time)")
    parser.add_argument("--task", type=int, metavar="I", help="run only point I (1-based; a SLURM array task)")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local",
                        help="local: run here; slurm: write sweep.sbatch (one array task per unfinished point), "
                        "sbatch it")
    parser.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                        help="an #SBATCH option for the array script, e.g. --sbatch=--time=04:00:00 (repeatable)")
    parser.add_argument("--baseline", metavar="ROW", help="the report's baseline row, e.g. 'grid best (val)'")
    parser.add_argument("--keep_going", action="store_true",
                        help="a failing point does not stop the others; it is reported with its reason and not "
                             "retried by a later --keep_going run (a run without it retries it)")  # fmt: skip
    parser.add_argument("--dry_run", "--print_commands", action="store_true",
                        help="write the sweep folder and print the commands (slurm: the sbatch command); "
                        "run nothing")  # fmt: skip
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be 1 or more, got {args.jobs}")
    return args, extra


def open_sweep(args: argparse.Namespace, extra: list[str]) -> tuple[Path, Sweep, list[Point]]:
    """The sweep folder (created, or checked against the arguments when it exists), its sweep and points.

    Writes ``sweep.yaml``, every point's override config and ``commands.txt``.
    """
    stored = None
    if args.resume is not None:
        given = [f"--{option}" for option in DEFINITION_OPTIONS if getattr(args, option)]
        given += ["-- ..."] if extra else []
        if given:
            raise DistillError(
                f"--resume takes the sweep's settings from {args.resume / SWEEP_FILE}; drop {' '.join(given)}"
            )
        sweep_dir = args.resume.resolve()
        stored = read_sweep_file(sweep_dir)
        sweep = Sweep.from_record(stored)
    else:
        sweep = Sweep.from_arguments(args.config or [], args.set, args.seeds, extra)
        name = args.name or f"{safe_name(sweep.default_name())}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        if safe_name(name) != name or name in (".", ".."):
            raise DistillError(f"--name {name}: use letters, digits and ._=+- only (it names a folder)")
        sweep_dir = (args.sweep_dir / name).resolve()
        if (sweep_dir / SWEEP_FILE).exists():
            stored = read_sweep_file(sweep_dir)
            changed = [key for key, value in sweep.record().items() if key != "cwd" and stored.get(key) != value]
            if changed:
                raise DistillError(
                    f"sweep {sweep_dir} exists with other settings ({', '.join(changed)} differ): continue it with "
                    f"distill-sweep --resume {sweep_dir}, or choose another --name"
                )
        sweep_dir.mkdir(parents=True, exist_ok=True)
    points = sweep.points()
    baseline = args.baseline or (stored or {}).get("baseline")
    record = {
        "format": SWEEP_FORMAT, "name": sweep_dir.name, **sweep.record(), "baseline": baseline,
        "points": [
            {"index": p.index, "label": p.label, "seed": p.seed, "settings": dict(p.configuration.settings),
             "group": p.configuration.group}
            for p in points
        ],
    }  # fmt: skip
    if stored != record:
        write_sweep_file(sweep_dir, record)
    for point in points:
        write_override(point, sweep_dir)
    commands = "".join(shlex.join(fit_command(point, sweep_dir, sweep.extra)) + "\n" for point in points)
    commands_path = sweep_dir / COMMANDS_FILE
    if not commands_path.is_file() or commands_path.read_text() != commands:
        write_atomically(commands_path, commands)
    if baseline:
        collect(sweep_dir).row(baseline)  # a wrong name stops now, not after the runs
    return sweep_dir, sweep, points


def finished(sweep_dir: Path, point: Point) -> bool:
    return point_state(run_dir(sweep_dir, point.label, point.seed))[0] is State.FINISHED


def report(sweep_dir: Path) -> None:
    paths = build_report(sweep_dir)
    say(f"report: {paths[1]} (also {paths[0].name}, {paths[2].name})")


def run_task(sweep_dir: Path, sweep: Sweep, points: list[Point], task: int, dry_run: bool = False) -> int:
    """One point (a SLURM array task); the report when that leaves every point finished.

    ``dry_run``: print what the task would do now (the command, with ``--ckpt_path`` when resuming).
    """
    if not 1 <= task <= len(points):
        raise DistillError(f"--task {task}: this sweep has points 1 to {len(points)}")
    point = points[task - 1]
    if dry_run:
        state, checkpoint = point_state(run_dir(sweep_dir, point.label, point.seed))
        command = fit_command(point, sweep_dir, sweep.extra) + ([f"--ckpt_path={checkpoint}"] if checkpoint else [])
        say(f"[{point.index}/{len(points)}] {point.name}: {state.value}")
        print("" if state is State.FINISHED else shlex.join(command), flush=True)
        return 0
    # SLURM sends --signal=SIGUSR1 to every process of the step; this wrapper must survive it (its
    # default action is to exit) while the `distill fit` child saves and requeues. A handler, not
    # SIG_IGN: an ignored signal stays ignored in the child, and Lightning would not install its own.
    signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    (result,) = run_points([point], sweep_dir, sweep.extra, sweep.cwd, total=len(points))
    if result.outcome is Outcome.FAILED:
        return result.status
    if all(finished(sweep_dir, point) for point in points):
        report(sweep_dir)
    return 0


def submit_to_slurm(args: argparse.Namespace, sweep_dir: Path, points: list[Point]) -> int:
    """Write ``sweep.sbatch`` for the unfinished points and submit it (``--dry_run``: print the sbatch command)."""
    unfinished = [point.index for point in points if not finished(sweep_dir, point)]
    if not unfinished:
        say(f"every point of {sweep_dir} has finished; nothing to submit")
        report(sweep_dir)
        return 0
    record = read_sweep_file(sweep_dir)
    text = slurm.sbatch_script(
        sweep_dir, record["name"], unfinished, sweep_command(), record["cwd"], args.sbatch,
        args.jobs if args.jobs > 1 else None,
    )  # fmt: skip
    script = slurm.write_script(sweep_dir, text)
    if args.dry_run:
        say(f"{len(unfinished)} of {len(points)} points to run; array script {script}")
        print(shlex.join(["sbatch", str(script)]), flush=True)
        return 0
    job = slurm.submit(script)
    say(f"submitted job array {job}: {len(unfinished)} tasks; their output goes to {sweep_dir / slurm.OUTPUT_DIR}")
    return 0


def run(args: argparse.Namespace, extra: list[str]) -> int:
    sweep_dir, sweep, points = open_sweep(args, extra)
    if args.task is not None:
        return run_task(sweep_dir, sweep, points, args.task, args.dry_run)
    if args.launcher == "slurm":
        return submit_to_slurm(args, sweep_dir, points)
    configurations = len({point.label for point in points})
    say(f"sweep {sweep_dir}: {len(points)} points ({configurations} configurations x {len(sweep.seeds)} seeds)")
    if args.dry_run:
        for point in points:
            print(shlex.join(fit_command(point, sweep_dir, sweep.extra)), flush=True)
        return 0
    results = run_points(points, sweep_dir, sweep.extra, sweep.cwd, args.jobs, keep_going=args.keep_going)
    counts = {outcome: sum(result.outcome is outcome for result in results) for outcome in Outcome}
    say(", ".join(f"{count} {outcome.value}" for outcome, count in counts.items() if count))
    failed = [result for result in results if result.outcome in (Outcome.FAILED, Outcome.FAILED_EARLIER)]
    if failed and not args.keep_going:
        say(f"stopped after a failure; fix it and continue with: distill-sweep --resume {sweep_dir}")
        return failed[0].status
    if any(finished(sweep_dir, point) for point in points):
        report(sweep_dir)
    if failed:
        say(f"{len(failed)} point(s) failed (the report lists them with their reasons); --keep_going kept the rest going")
        return failed[0].status or 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``distill-sweep``; user errors print one line and exit with status 2."""
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        status = run(args, extra)
    except DistillError as error:
        print(f"distill-sweep: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        where = f"{args.resume}" if args.resume else "the sweep folder printed above"
        print(f"\ndistill-sweep: interrupted; continue with distill-sweep --resume {where}", file=sys.stderr)
        sys.exit(130)
    if status:
        sys.exit(status)
    return 0
