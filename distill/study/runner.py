"""Run a study: one ``distill-sweep`` (every method x seeds), its ``distill-report``, the per-sample
summaries, then the committed results folder and its document.

What lands in ``<out>/<name>/`` (the files the document is generated from):

- ``results.csv``, ``results.md``, ``results.png``: ``distill-report``'s table and figure (baseline: the
  KD grid's best temperature chosen on validation);
- ``runs.csv``: one row per run (configuration, seed, test and validation top-1, epochs, fit seconds),
  read from the runs' ``metrics.json``, for comparisons between any two rows;
- ``per_sample.csv``: per configuration and per-sample quantity (sigma_i, T_i, alpha_i, ...) the
  quantiles over every training sample of the last epoch, pooled over seeds, from the runs' records;
- ``study.json``: the plan, the command, the versions and the wall time.

The run folders themselves stay in ``<runs>/<name>`` (TensorBoard logs, configs, checkpoints, records).
"""

from __future__ import annotations

import csv
import io
import json
import platform
import shlex
import shutil
import time
from pathlib import Path

import numpy as np

from callbacks.records import read_records, record_files
from distill.errors import DistillError
from distill.layers import CONFIGS
from distill.report import build_report
from distill.run_metrics import read_run_metrics
from distill.study.plans import BASELINE, Plan
from distill.sweep import main as sweep_main
from distill.sweep.folder import read_sweep_file, run_dir
from distill.atomic_file import write_atomically

PER_SAMPLE_COLUMNS = ("sigma", "teacher_T", "student_T", "alpha", "kd_weight")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def sweep_arguments(plan: Plan, runs: Path, quick: bool, jobs: int) -> list[str]:
    """The ``distill-sweep`` command line of the study."""
    layers = [argument for layer in plan.layers() for argument in ("--config", layer)]
    seeds = "2" if quick else str(plan.seeds)
    extra = [*plan.extra, *(plan.quick_extra if quick else ()), "--trainer.enable_progress_bar=false"]
    methods = plan.quick_methods if quick else plan.methods
    return [*layers, "--set", "config=" + ",".join(methods), "--seeds", seeds, "--sweep_dir", str(runs),
            "--name", plan.name, "--jobs", str(jobs), "--baseline", BASELINE, "--keep_going", "--", *extra]  # fmt: skip


def runs_table(sweep_dir: Path) -> list[dict]:
    """One row per finished run of the sweep: configuration, seed, top-1 (in %), epochs, fit seconds."""
    rows = []
    for point in read_sweep_file(sweep_dir)["points"]:
        metrics = read_run_metrics(run_dir(sweep_dir, point["label"], point["seed"]))
        if metrics is None:
            continue
        values = metrics["metrics"]
        rows.append({
            "configuration": point["label"], "seed": point["seed"],
            "test_acc1": 100 * values["test/acc1"], "val_acc1": 100 * values.get("val/acc1", float("nan")),
            "epochs": metrics["epochs"], "fit_seconds": metrics["fit_seconds"],
        })  # fmt: skip
    return rows


def per_sample_quantiles(sweep_dir: Path) -> list[dict]:
    """Per configuration and column, the quantiles of the last epoch's per-sample values, seeds pooled."""
    pooled: dict[str, dict[str, list[np.ndarray]]] = {}
    for point in read_sweep_file(sweep_dir)["points"]:
        folder = run_dir(sweep_dir, point["label"], point["seed"])
        files = record_files(folder)
        if not files:
            continue  # a CE-only run, or not finished
        last = int(files[-1].stem.split("_")[-1])
        records = read_records(folder, epochs=[last])
        for column in PER_SAMPLE_COLUMNS:
            pooled.setdefault(point["label"], {}).setdefault(column, []).append(records[column])
    rows = []
    for label, columns in pooled.items():
        for column, parts in columns.items():
            values = np.concatenate(parts).astype(np.float64)
            values = values[np.isfinite(values)]
            quantiles = np.quantile(values, QUANTILES) if values.size else [float("nan")] * len(QUANTILES)
            rows.append({"configuration": label, "quantity": column, "samples": int(values.size),
                         **{f"q{int(100 * q):02d}": float(v) for q, v in zip(QUANTILES, quantiles)},
                         "mean": float(values.mean()) if values.size else float("nan")})  # fmt: skip
    return rows


def csv_text(rows: list[dict]) -> str:
    if not rows:
        return ""
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return stream.getvalue()


def shown(arguments: list[str]) -> str:
    """The sweep's command line as a reader would type it: paths relative to the checkout, quoted."""
    return " ".join(shlex.quote(argument.replace(f"{CONFIGS.parent}/", "")) for argument in arguments)


def versions() -> dict[str, str]:
    import lightning
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__,
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores"}  # fmt: skip


def run_study(plan: Plan, runs: Path, out: Path, quick: bool = False, jobs: int = 2) -> Path:
    """Run (or resume) the study's sweep, then write its results folder ``out/<name>`` and document.

    Returns:
        The document's path, ``out/<name>.md``.
    """
    arguments = sweep_arguments(plan, runs, quick, jobs)
    started = time.time()
    try:  # a method that fails (e.g. diverges) is reported with its reason, not a reason to stop the study
        sweep_main(arguments)
    except SystemExit as stopped:
        if not (runs / plan.name / "results.csv").is_file():
            raise DistillError(f"study {plan.name}: the sweep stopped ({stopped.code}) before any run finished") from None
    wall = time.time() - started
    sweep_dir = runs / plan.name
    build_report(sweep_dir, BASELINE)
    folder = out / plan.name
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("results.csv", "results.md", "results.png"):
        shutil.copyfile(sweep_dir / name, folder / name)
    write_atomically(folder / "runs.csv", csv_text(runs_table(sweep_dir)))
    write_atomically(folder / "per_sample.csv", csv_text(per_sample_quantiles(sweep_dir)))
    previous = json.loads((folder / "study.json").read_text()) if (folder / "study.json").is_file() else {}
    record = {
        "study": plan.name,
        "title": plan.title,
        "quick": quick,
        "command": "make study" + (" QUICK=1" if quick else "") + f"  (distill-sweep {shown(arguments)})",
        "seeds": 2 if quick else plan.seeds,
        "jobs": jobs,
        # A resumed study adds the wall time of this call to what earlier calls spent.
        "wall_seconds": round(wall + (previous.get("wall_seconds", 0.0) if previous.get("quick") == quick else 0.0)),
        "fit_seconds_of_runs": round(sum(row["fit_seconds"] for row in runs_table(sweep_dir))),
        "versions": versions(),
        "design": plan.design,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip
    write_atomically(folder / "study.json", json.dumps(record, indent=2) + "\n")
    from distill.study.document import write_document

    return write_document(folder)

