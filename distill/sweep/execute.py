"""Run sweep points: one after another, or ``jobs`` at a time as child processes on this machine.

Each point runs under an exclusive lock (``<label>/seed<k>.lock``, ``flock``) that its ``distill fit``
child inherits, so a second ``distill-sweep`` on the same folder (another terminal, a SLURM task)
skips a point that is running instead of running it twice. Under the lock the point's state decides:
finished -> skipped, interrupted -> resumed from its newest checkpoint, new -> started.

With ``jobs > 1`` every child writes its output to ``<label>/seed<k>.log`` and gets
``OMP_NUM_THREADS = MKL_NUM_THREADS = max(1, cores // jobs)`` (unless already set), so that K
processes do not each start one thread per core; on a machine with GPUs, child ``i`` of the K slots
sees only GPU ``i mod (number of GPUs)`` (``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from distill.atomic_file import write_atomically
from distill.run_metrics import read_run_metrics
from distill.sweep.definition import Point
from distill.sweep.folder import point_file, run_dir
from distill.sweep.point import State, clear_unresumable, fit_command, point_state

_PRINT_LOCK = threading.Lock()


class Outcome(Enum):
    SKIPPED = "skipped (finished earlier)"
    BUSY = "skipped (running in another process)"
    DONE = "done"
    FAILED = "failed"
    FAILED_EARLIER = "skipped (failed earlier; --keep_going does not retry it)"
    NOT_STARTED = "not started (an earlier point failed)"


@dataclass
class Result:
    point: Point
    outcome: Outcome
    status: int = 0


def say(message: str) -> None:
    """One progress line on stderr (whole lines even from several threads)."""
    with _PRINT_LOCK:
        print(f"distill-sweep: {message}", file=sys.stderr, flush=True)


def run_points(
    points: list[Point], sweep_dir: Path, extra: list[str], cwd: str, jobs: int = 1, total: int | None = None,
    keep_going: bool = False,
) -> list[Result]:
    """Run ``points`` (``jobs`` at a time); after a failure no new point starts, running ones finish
    (``keep_going``: every point runs, and a point that failed in an earlier call is not retried).
    ``total``: the sweep's number of points, for the ``[i/total]`` in messages (default: ``len(points)``)."""
    total = total or len(points)
    stop = threading.Event()
    earlier: list[Result] = []
    if keep_going:  # a failure never stops the others; points that failed in an earlier call stay failed
        stop = _NeverSet()
        earlier = [Result(point, Outcome.FAILED_EARLIER) for point in points if _failed_earlier(point, sweep_dir, total)]
        skipped = {id(result.point) for result in earlier}
        points = [point for point in points if id(point) not in skipped]
    if jobs <= 1:
        results = list(earlier)
        for point in points:
            results.append(run_point(point, sweep_dir, extra, cwd, total, stop, slot=None, jobs=1))
        return results
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(jobs):
        slots.put(slot)

    def in_a_slot(point: Point) -> Result:
        slot = slots.get()
        try:
            return run_point(point, sweep_dir, extra, cwd, total, stop, slot=slot, jobs=jobs)
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return earlier + list(pool.map(in_a_slot, points))


def run_point(
    point: Point, sweep_dir: Path, extra: list[str], cwd: str, total: int, stop: threading.Event,
    slot: int | None, jobs: int,
) -> Result:  # fmt: skip
    """Skip, resume or start one point under its lock; the ``distill fit`` child runs in ``cwd``."""
    prefix = f"[{point.index}/{total}] {point.name}"
    if stop.is_set():
        return Result(point, Outcome.NOT_STARTED)
    folder = run_dir(sweep_dir, point.label, point.seed)
    if point_state(folder)[0] is State.FINISHED:  # the common case on a restart: no lock needed
        say(f"{prefix}: {Outcome.SKIPPED.value}")
        return Result(point, Outcome.SKIPPED)
    lock_path = point_file(sweep_dir, point.label, point.seed, ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"{prefix}: {Outcome.BUSY.value}")
            return Result(point, Outcome.BUSY)
        state, checkpoint = point_state(folder)  # again, now that no one else can change it
        if state is State.FINISHED:
            say(f"{prefix}: {Outcome.SKIPPED.value}")
            return Result(point, Outcome.SKIPPED)
        if state is State.NEW and clear_unresumable(folder):
            say(f"{prefix}: removed an earlier attempt that left no checkpoint ({folder})")
        command = fit_command(point, sweep_dir, extra)
        if checkpoint is not None:
            command.append(f"--ckpt_path={checkpoint}")
        log_path = point_file(sweep_dir, point.label, point.seed, ".log") if jobs > 1 else None
        action = f"resuming from {checkpoint}" if checkpoint is not None else "starting"
        say(f"{prefix}: {action}" + (f" (output: {log_path})" if log_path else "") + f": {shlex.join(command)}")
        started = time.perf_counter()
        with open(log_path, "a") if log_path else contextlib.nullcontext() as log:
            output = {"stdout": log, "stderr": subprocess.STDOUT} if log else {}
            # pass_fds: the child holds the lock too, so the point stays locked while it runs even if
            # this process dies.
            child = subprocess.Popen(
                command, cwd=cwd, env=child_environment(slot, jobs), pass_fds=(lock.fileno(),), **output
            )
            status = wait_gracefully(child)
        seconds = time.perf_counter() - started
        metrics = read_run_metrics(folder) if status == 0 else None
        if metrics is None:
            stop.set()
            reason = f"exit status {status}" if status else f"it wrote no {folder / 'metrics.json'}"
            error = last_error_line(log_path)
            write_atomically(point_file(sweep_dir, point.label, point.seed, FAILED_SUFFIX),
                             f"{reason}: {error}\n" if error else f"{reason}\n")  # fmt: skip
            say(f"{prefix}: FAILED ({reason})" + (f"; see {log_path}" if log_path else ""))
            return Result(point, Outcome.FAILED, status or 1)
        point_file(sweep_dir, point.label, point.seed, FAILED_SUFFIX).unlink(missing_ok=True)
        accuracy = metrics["metrics"].get("test/acc1")
        tested = f", test top-1 {100 * accuracy:.2f}%" if accuracy is not None else ""
        say(f"{prefix}: done in {seconds:.0f} s{tested}")
        return Result(point, Outcome.DONE)


FAILED_SUFFIX = ".failed"


class _NeverSet(threading.Event):
    """A stop flag that ``--keep_going`` never raises."""

    def set(self) -> None:
        pass


def failure_reason(sweep_dir: Path, label: str, seed: int) -> str | None:
    """The one-line reason a point failed (its ``.failed`` file), or ``None`` if it has not failed."""
    path = point_file(sweep_dir, label, seed, FAILED_SUFFIX)
    return path.read_text().strip() if path.is_file() else None


def _failed_earlier(point: Point, sweep_dir: Path, total: int) -> bool:
    """True (and said) for a point whose last run failed and has not finished since (``--keep_going`` skips it)."""
    reason = failure_reason(sweep_dir, point.label, point.seed)
    if reason is None or point_state(run_dir(sweep_dir, point.label, point.seed))[0] is State.FINISHED:
        return False
    say(f"[{point.index}/{total}] {point.name}: {Outcome.FAILED_EARLIER.value} ({reason})")
    return True


def last_error_line(log_path: Path | None) -> str | None:
    """The last ``error:`` line of a point's output file (the one-line reason ``distill`` printed)."""
    if log_path is None or not log_path.is_file():
        return None
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if "error:" in line]
    return lines[-1] if lines else None


def wait_gracefully(child: subprocess.Popen, grace_seconds: float = 60.0) -> int:
    """Wait for ``child``; on Ctrl-C give it time to stop by itself (it got the same SIGINT: Lightning
    stops cleanly, leaving its checkpoints for a resume) before killing it, then re-raise."""
    try:
        return child.wait()
    except KeyboardInterrupt:
        try:
            child.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


def child_environment(slot: int | None, jobs: int) -> dict[str, str]:
    """The environment of a point's ``distill fit``: this one, plus thread and GPU shares when ``jobs > 1``."""
    environment = dict(os.environ)
    if jobs <= 1 or slot is None:
        return environment
    threads = str(max(1, len(os.sched_getaffinity(0)) // jobs))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        environment.setdefault(variable, threads)
    gpus = visible_gpus()
    if gpus:
        environment["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return environment


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every device torch counts."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    import torch  # counting devices does not create a CUDA context

    return [str(index) for index in range(torch.cuda.device_count())]
