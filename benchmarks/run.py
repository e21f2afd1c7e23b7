"""``make bench``: every benchmark, side by side in one process, written to docs/benchmarks.{json,md}.

    python -m benchmarks.run [--mode quick|full|tiny] [--out docs] [--only framework,policy,...]

``quick`` (the default on the CPU) takes minutes; ``full`` (the default on a GPU) times more steps and
adds the GPU figures; ``tiny`` only runs every code path once (the test suite uses it). Every figure
is a ratio (or a rate) measured in this one run, with its setup and peak memory next to it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import (
    blockwise_step, cifar_loader, framework_overhead, gpu_throughput, per_sample_overhead, policy_overhead,
    teacher_cache,
)  # fmt: skip
from benchmarks.harness import MODES, Figure, device, environment

# name -> run(mode, context) -> figures; context carries figures earlier benchmarks measured.
BENCHMARKS: dict[str, Callable[[str, dict], list[Figure]]] = {
    "framework": lambda mode, context: framework_overhead.run(mode),
    "policy": lambda mode, context: policy_overhead.run(mode, kd_step_ms=context.get("kd_step_ms")),
    "per_sample": lambda mode, context: per_sample_overhead.run(mode),
    "blockkd": lambda mode, context: blockwise_step.run(mode),
    "loader": lambda mode, context: cifar_loader.run(mode),
    "cache": lambda mode, context: teacher_cache.run(mode),
    "gpu": lambda mode, context: gpu_throughput.run(mode),
}


def kd_step_ms(figures: list[Figure]) -> float | None:
    """The Lightning side of ``framework.plain_loop``: the KD step the policy figures are measured against."""
    for figure in figures:
        if figure.key == "framework.plain_loop":
            return figure.variants["lightning"]["median_ms"]
    return None


def format_value(figure: Figure) -> str:
    if math.isnan(figure.value):
        return "n/a"
    return f"{figure.value:.3f}" if figure.unit == "x" else f"{figure.value:,.1f} {figure.unit}"


def markdown(results: dict) -> str:
    """The report: environment, then one table row per figure, then every figure's setup."""
    env = results["environment"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{results['command']}` on {env['date']} ({results['mode']} mode, {results['wall_seconds']:.0f} s).",
        f"Device: {env['device']}; {env['cpu_count']} CPU cores, {env['torch_threads']} torch thread(s); "
        f"Python {env['python']}, torch {env['torch']}, Lightning {env['lightning']}.",
        "",
        "Every ratio is measured side by side in this one run: each repeat runs every variant once, in a",
        "rotating order, and the figure is the median over repeats of variant / baseline (median unit times).",
        "Absolute times are for orientation only; peak memory is CUDA's max allocated on a GPU and the",
        "process's peak resident set so far on the CPU.",
        "",
        "| figure | what | value | bound | within | median ms (peak MB) per variant |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for item in results["figures"]:
        figure = Figure(**{key: value for key, value in item.items() if key != "within_bound"})
        bound = f"<= {figure.bound}" if figure.bound is not None else f">= {figure.at_least}" if figure.at_least else ""
        within = {None: "", True: "yes", False: "**no**"}[figure.within_bound]
        sides = "; ".join(
            f"{name}: {values.get('median_ms', values.get('loss_part_ms', float('nan'))):.2f}"
            + (f" ({values['peak_memory_mb']:.0f})" if "peak_memory_mb" in values else "")
            for name, values in figure.variants.items()
        )
        lines.append(f"| `{figure.key}` | {figure.title} | {format_value(figure)} | {bound} | {within} | {sides} |")
    lines += ["", "## Setups", ""]
    for item in results["figures"]:
        setup = ", ".join(f"{key}={value}" for key, value in item["setup"].items())
        note = f" {item['note']}" if item["note"] else ""
        lines.append(f"- `{item['key']}`: {setup}.{note}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, default=None, help="default: full on a GPU, quick on the CPU")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for benchmarks.json and .md")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmarks to run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1)")
    args = parser.parse_args(argv)
    mode = args.mode or ("full" if device().type == "cuda" else "quick")
    torch.set_num_threads(args.threads)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}: choose from {', '.join(BENCHMARKS)}")
    started = time.perf_counter()
    figures: list[Figure] = []
    failed = []
    for name in chosen:
        print(f"benchmarks: {name} ({mode})", file=sys.stderr, flush=True)
        try:
            figures += BENCHMARKS[name](mode, {"kd_step_ms": kd_step_ms(figures)})
        except Exception as error:  # one broken benchmark must not lose the others' measurements
            traceback.print_exc()
            failed.append(name)
            figures.append(Figure(f"{name}.failed", f"benchmark {name} failed", float("nan"), "",
                                  note=f"{type(error).__name__}: {error}"))  # fmt: skip
    results = {
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "mode": mode,
        "wall_seconds": time.perf_counter() - started,
        "environment": environment(),
        "figures": [figure.as_dict() for figure in figures],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    report = markdown(results)
    (args.out / "benchmarks.md").write_text(report)
    print(report)
    if failed:
        print(f"benchmarks: failed: {', '.join(failed)} (the other figures were written)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
