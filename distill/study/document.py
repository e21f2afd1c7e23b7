"""The study's document, generated from its committed results files, never typed by hand.

    python -m distill.study document docs/results/fashion_mnist     # -> docs/results/fashion_mnist.md

Reads ``results.csv`` (the table), ``runs.csv`` (per-run numbers, for comparisons between any two rows),
``per_sample.csv`` (quantiles of sigma_i, T_i, alpha_i), ``study.json`` (command, versions, wall time),
draws ``per_sample.png`` from ``per_sample.csv``, and writes the document: the table, the figures, how
it was made, and a reading in plain words whose every sentence is computed from those numbers. The teacher
comes from the plan's pair config and ``teachers/registry.py`` (with the runs' own measurement of it where
``runs.csv`` has a ``teacher_acc1`` column). A configuration that collapsed (its student near chance) is
named as such, and no comparison with it is read as a verdict on the method.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from distill.atomic_file import write_atomically  # noqa: E402
from distill.errors import DistillError  # noqa: E402
from distill.layers import CONFIGS  # noqa: E402
from distill.models import create  # noqa: E402
from distill.report.statistics import Comparison, compare, mean_std  # noqa: E402
from distill.study.plans import BASELINE, STUDIES, Plan  # noqa: E402
from teachers.check import expected_accuracy  # noqa: E402
from teachers.registry import resolve  # noqa: E402

# A configuration whose mean test top-1 is this many points below the CE-only student's has collapsed.
COLLAPSE_POINTS = 20.0
SHOWN = {"sigma": "sigma_i (teacher logit std)", "teacher_T": "teacher T_i", "alpha": "alpha_i (KD share)"}


def read_csv(path: Path) -> list[dict]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


def by_seed(runs: list[dict], configuration: str) -> dict[int, float]:
    return {int(row["seed"]): float(row["test_acc1"]) for row in runs if row["configuration"] == configuration}


def grid_mean_by_seed(runs: list[dict]) -> dict[int, float]:
    """Per seed, the mean test top-1 over the grid's temperatures (seeds every T finished)."""
    grid = [row for row in runs if row["configuration"].startswith("grid,T=")]
    temperatures = {row["configuration"] for row in grid}
    seeds = {int(row["seed"]) for row in grid}
    complete = [s for s in sorted(seeds) if sum(int(r["seed"]) == s for r in grid) == len(temperatures)]
    return {s: sum(float(r["test_acc1"]) for r in grid if int(r["seed"]) == s) / len(temperatures) for s in complete}


def verdict(comparison: Comparison) -> str:
    """'better', 'worse' or 'no detectable difference', from the 95% CI of the difference."""
    if not comparison.tested:
        return f"not testable ({comparison.test})"
    if comparison.ci_low > 0:
        return "better"
    if comparison.ci_high < 0:
        return "worse"
    return "no detectable difference"


def describe(name: str, comparison: Comparison, other: str) -> str:
    if not comparison.tested:
        return f"{name} vs {other}: {comparison.difference:+.2f} points, {comparison.test}."
    return (f"{name} vs {other}: {comparison.difference:+.2f} points (95% CI [{comparison.ci_low:+.2f}, "
            f"{comparison.ci_high:+.2f}], p = {comparison.p_value:.3g}): {verdict(comparison)}.")  # fmt: skip


def collapsed_configurations(results: list[dict], ce: dict[int, float]) -> dict[str, float]:
    """The configurations whose mean test top-1 is more than ``COLLAPSE_POINTS`` below the CE-only student's
    (``{name: mean}``, in the table's order): runs whose loss stayed finite but whose student ended near chance.
    Empty without CE runs (nothing to measure a collapse against)."""
    if not ce:
        return {}
    floor = mean_std(list(ce.values()))[0] - COLLAPSE_POINTS
    return {row["configuration"]: float(row["test_acc1_mean"]) for row in results
            if row.get("test_acc1_mean") and float(row["test_acc1_mean"]) < floor}  # fmt: skip


def collapse_caveat(collapsed: dict[str, float], configurations: Iterable[str], meaning: str = "") -> str:
    """Why a comparison says nothing about the methods, when one of the ``configurations`` it is computed from
    collapsed: a near-chance student differs from anything by tens of points, which is no verdict on the method.
    ``meaning`` is what the comparison does say (by default: that those configurations did not train).
    Empty when none of them collapsed."""
    fallen = list(dict.fromkeys(name for name in configurations if name in collapsed))
    if not fallen:
        return ""
    listed = ", ".join(f"{name} collapsed ({collapsed[name]:.2f}%)" for name in fallen)
    meaning = meaning or f"{' and '.join(fallen)} did not train at this recipe's learning rate"
    return f"not a like-for-like comparison: {listed}, so this says only that {meaning}"


def judged(name: str, values: dict[int, float], other: str, other_values: dict[int, float],
           collapsed: dict[str, float], configurations: Iterable[str], meaning: str = "") -> str:
    """``describe`` of ``values`` against ``other_values``, or, when a configuration either side is computed from
    collapsed, that caveat in place of the numbers and the verdict."""  # fmt: skip
    caveat = collapse_caveat(collapsed, configurations, meaning)
    if caveat:
        return f"{name} vs {other}: {caveat}."
    return describe(name, compare(values, other_values), other)


def reading(results: list[dict], runs: list[dict]) -> list[str]:
    """Plain-words findings, each computed from the numbers; none drawn from a collapsed configuration."""
    rows = {row["configuration"]: row for row in results}
    lines = []
    best = next((row for row in results if row["configuration"] == BASELINE), None)
    tuned = by_seed(runs, best["selected"]) if best and best["selected"] else {}
    tuned_from = (best["selected"],) if tuned else ()  # the baseline row repeats the selected T's numbers
    ce = by_seed(runs, "ce")
    collapsed = collapsed_configurations(results, ce)
    if ce and tuned:
        label = "the validation-tuned KD (" + best["selected"] + ")"
        caveat = collapse_caveat(collapsed, tuned_from)
        if caveat:
            lines.append(f"Design check: {label} vs CE only: {caveat}. The premise of the study, that plain KD beats "
                         "the CE-only student by more than the seed spread, is not tested by this run.")  # fmt: skip
        else:
            gain = compare(tuned, ce)
            spread = max(mean_std(list(ce.values()))[1], mean_std(list(tuned.values()))[1])
            holds = "holds" if gain.difference > spread else "does NOT hold"
            lines.append(f"Design check: {describe(label, gain, 'CE only')} The premise of the study, that plain KD "
                         f"beats the CE-only student by more than the seed spread, {holds}: a gain of "
                         f"{gain.difference:.2f} points against a largest std of {spread:.2f}.")  # fmt: skip
    grid_mean = grid_mean_by_seed(runs)
    # The grid mean is computed from every temperature: one collapsed T drags it down.
    grid_mean_from = (*sorted({row["configuration"] for row in runs if row["configuration"].startswith("grid,T=")}),
                      "grid mean")  # fmt: skip
    if tuned and grid_mean:
        lines.append("Tuning the temperature: "
                     + judged(f"the grid's best T (chosen on validation: {best['selected']})", tuned, "the grid mean",
                              grid_mean, collapsed, (*tuned_from, *grid_mean_from))
                     + " The grid costs one run per temperature; every other method here is one run.")  # fmt: skip
    tals = by_seed(runs, "tals")
    if tals and tuned:
        lines.append("Does TALS, in one run with no constant to tune, beat the tuned grid? "
                     + judged("TALS", tals, "the grid's best T", tuned, collapsed, ("tals", *tuned_from))
                     + (" " + judged("TALS", tals, "the grid mean", grid_mean, collapsed,
                                     ("tals", *grid_mean_from)) if grid_mean else ""))  # fmt: skip
    lskd, plain = by_seed(runs, "lskd"), by_seed(runs, "kd_lskd_weights")
    if lskd and plain:
        # Only the plain side collapsing says something about the z-score: the same weights train with it.
        without_z_score = ("without the z-score these weights diverge at this learning rate"
                           if "kd_lskd_weights" in collapsed and "lskd" not in collapsed else "")  # fmt: skip
        lines.append("Does z-score's gain survive KD with the same temperature and weights? "
                     + judged("LSKD (z-scored)", lskd, "KD at T=2, CE 0.1, KD 9 (no z-score)", plain, collapsed,
                              ("lskd", "kd_lskd_weights"), meaning=without_z_score)
                     + (" " + judged("LSKD", lskd, "the tuned grid", tuned, collapsed, ("lskd", *tuned_from))
                        if tuned else ""))  # fmt: skip
    if collapsed:
        listed = ", ".join(f"{name} ({value:.2f}%)" for name, value in collapsed.items())
        lines.append(f"Collapsed runs, more than {COLLAPSE_POINTS:.0f} points below the CE-only student: {listed}. "
                     "Their loss stayed finite (so the run was not stopped) but the student ended near chance: this "
                     "recipe's learning rate is too high for that method's loss scale. Comparisons with them say "
                     "only that.")  # fmt: skip
    baseline_caveat = collapse_caveat(collapsed, tuned_from)
    if baseline_caveat:
        lines.append(f"Against the validation-tuned KD ({BASELINE}): {baseline_caveat}.")
        return lines
    tested = [name for name, row in rows.items() if row.get("test") and not row["test"].startswith(("n/a", "baseline"))]
    compared = [name for name in tested if name not in collapsed]
    better = [name for name in compared if rows[name]["ci95_low"] and float(rows[name]["ci95_low"]) > 0]
    worse = [name for name in compared if rows[name]["ci95_high"] and float(rows[name]["ci95_high"]) < 0]
    left_out = [name for name in tested if name in collapsed]
    lines.append(f"Against the validation-tuned KD ({BASELINE}), at 95% confidence: better: "
                 f"{', '.join(better) or 'none'}; worse: {', '.join(worse) or 'none'}; "
                 + (f"not compared (collapsed): {', '.join(left_out)}; " if left_out else "")
                 + "every other method shows no detectable difference with this many seeds (the table's CI column "
                 "says how large a difference could still hide).")  # fmt: skip
    return lines


def per_sample_figure(quantiles: list[dict]) -> bytes:
    """Box plots (5-25-50-75-95% quantiles) of sigma_i, T_i and alpha_i per configuration, from per_sample.csv."""
    configurations = list(dict.fromkeys(row["configuration"] for row in quantiles))
    figure, axes = plt.subplots(1, len(SHOWN), figsize=(4.6 * len(SHOWN), 0.32 * len(configurations) + 1.6))
    for axis, (quantity, title) in zip(axes, SHOWN.items()):
        stats = []
        for configuration in configurations:
            row = next((r for r in quantiles if r["configuration"] == configuration and r["quantity"] == quantity),
                       None)  # fmt: skip
            if row is None or math.isnan(float(row["q50"])):
                stats.append({"label": configuration, "whislo": math.nan, "q1": math.nan, "med": math.nan,
                              "q3": math.nan, "whishi": math.nan, "fliers": []})  # fmt: skip
                continue
            stats.append({"label": configuration, "whislo": float(row["q05"]), "q1": float(row["q25"]),
                          "med": float(row["q50"]), "q3": float(row["q75"]), "whishi": float(row["q95"]), "fliers": []})
        axis.bxp(stats, vert=False, showfliers=False)
        axis.set_title(title, fontsize=10)
        axis.tick_params(labelsize=8)
        if quantity == "teacher_T":
            axis.set_xscale("log")
    figure.suptitle("Per-sample values over the last epoch's training samples (whiskers: 5% and 95%)", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def cifar_section() -> list[str]:
    """The CIFAR-100 claims as commands (from ``distill.experiments``): what a GPU user runs to test them."""
    from distill.experiments import CIFAR_METHODS, CIFAR_PAIRS, EXPERIMENTS

    published = {(e.pair, e.method): e.published for e in EXPERIMENTS if e.data == "cifar100"}
    methods = [method for method in CIFAR_METHODS if any(published.get((pair, method)) for pair in CIFAR_PAIRS)]
    lines = [
        "## The CIFAR-100 claims, on GPUs",
        "",
        "These need CIFAR-100, the published teachers and GPUs, which the machines that made this report lack.",
        "Each published number below is one command, `make experiment NAME=cifar100/<pair>/<method>`, which adds the",
        "pair's published layers (`docs/experiments.md` lists every command, the TALS recipe, ImageNet,",
        "and the estimated GPU hours of each run: about 0.02-0.11 h per CIFAR-100 run, 0.3 h per TALS-recipe run,",
        "from counted FLOPs at an assumed 10% of an H100's bf16 peak).",
        "",
        "| pair | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for pair in CIFAR_PAIRS:
        lines.append(f"| `{pair}` | " + " | ".join(published.get((pair, m)) or "" for m in methods) + " |")
    tals = next(e for e in EXPERIMENTS if e.pair == "ResNet34-ResNet18" and e.method == "tals")
    lines += [
        "",
        "The TALS claim (83.27 +- 0.20 over 3 seeds against a KD grid average of 83.11 and DKD 83.19, CIFAR-100",
        f"ResNet-34 -> ResNet-18 with SAM, AutoAugment and Cutout): one TALS run is `{tals.command()}`; the claim itself",
        "is a sweep of the grid, TALS and DKD over seeds, with the grid's validation-chosen best as the fair baseline",
        "(`docs/experiments.md`, \"Reproducing the TALS claim\": 18 runs, about 5.4 GPU hours estimated).",
        "",
    ]
    return lines


def measured_teacher_accuracy(runs: list[dict]) -> list[float]:
    """The teacher's test top-1 (in %, like ``test_acc1``) each run measured, where ``runs.csv`` has a
    ``teacher_acc1`` column (the runs' ``test/teacher_acc1``); empty where it has none."""
    return [float(row["teacher_acc1"]) for row in runs if row.get("teacher_acc1")]


def teacher_line(plan: Plan, runs: list[dict]) -> str:
    """The study's teacher, from its pair config and ``teachers/registry.py``: architecture, parameters counted
    on the built model, the registry's test top-1 (with what the runs measured, where ``runs.csv`` has it),
    and how the file is made."""
    pair = CONFIGS / "pairs" / f"{plan.pair}.yaml"
    name = yaml.safe_load(pair.read_text())["model"]["teacher"]
    path, entry = resolve(name)
    if entry is None:
        return f"- Teacher: the file `{path}` named by `{pair.relative_to(CONFIGS.parent)}` (not a registered teacher)."
    model = create(entry.architecture, entry.num_classes, entry.input_shape)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    # A teacher made here whose accuracy was not known in advance has it only in its file (as make teacher-check).
    source = "`teachers/registry.py`" if entry.test_accuracy is not None else f"recorded in `{entry.checkpoint}`"
    accuracy = f"test top-1 {100 * expected_accuracy(entry):.2f}% ({source}"
    measured = measured_teacher_accuracy(runs)
    if measured:
        low, high = min(measured), max(measured)
        span = f"{low:.2f}%" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f}%"
        accuracy += f"; measured again by the study's {len(measured)} runs: {span}"
    accuracy += ")"
    made = (f"published weights, {entry.how_to_make}" if entry.downloaded
            else f"trained here by `{entry.how_to_make}` (config `{entry.config}`)")  # fmt: skip
    return f"- Teacher: {entry.name} ({entry.architecture}, {parameters:,} parameters), {accuracy}, {made}."


def table_lines(results_md: str) -> list[str]:
    """The table rows of distill-report's results.md (its first table)."""
    lines = results_md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| configuration"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def write_document(folder: Path) -> Path:
    """Write ``<folder>.md`` (and ``<folder>/per_sample.png``) from the files in ``folder``."""
    folder = Path(folder)
    study = json.loads((folder / "study.json").read_text())
    if study["study"] not in STUDIES:
        raise DistillError(f"{folder / 'study.json'}: study {study['study']!r} is not one of {', '.join(STUDIES)}")
    results = read_csv(folder / "results.csv")
    runs = read_csv(folder / "runs.csv")
    quantiles = read_csv(folder / "per_sample.csv") if (folder / "per_sample.csv").stat().st_size else []
    if quantiles:
        write_atomically(folder / "per_sample.png", per_sample_figure(quantiles))
    relative = folder.name
    hours = study["wall_seconds"] / 3600
    v = study["versions"]
    lines = [
        f"# Study: {study['title']}",
        "",
        "Generated by `python -m distill.study document` from the files in "
        f"[`{relative}/`]({relative}/) (never edited by hand).",
        "",
        f"- Command: `{study['command']}`" + (" **(QUICK: a code-path check, not results)**" if study["quick"] else ""),
        f"- Seeds per configuration: {study['seeds']}; {study['jobs']} runs at a time.",
        f"- Wall time: {study['wall_seconds']} s ({hours:.2f} h) on {v['machine']}; Python {v['python']}, "
        f"torch {v['torch']}, Lightning {v['lightning']}; finished {study['finished']}.",
        teacher_line(STUDIES[study["study"]], runs),
        f"- Design: {study['design']}",
        "",
        "## Results",
        "",
        f"Student test top-1 (last epoch), mean ± std over seeds; differences against the KD grid's best "
        f"temperature chosen on validation (`{BASELINE}`), paired over seeds, with 95% CI and p-value.",
        "",
        *table_lines((folder / "results.md").read_text()),
        "",
        *[line + "\n" for line in (folder / "results.md").read_text().splitlines() if line.startswith("Not finished")],
        f"![test top-1 per configuration]({relative}/results.png)",
        "",
        "## What holds and what does not",
        "",
        *[f"- {line}" for line in reading(results, runs)],
        "",
        "## What the policies do to each sample",
        "",
        "Distributions over the training samples of the last epoch (all seeds pooled): the teacher's logit",
        "std sigma_i, the teacher temperature T_i and the KD share alpha_i each policy set.",
        "",
        f"![per-sample distributions]({relative}/per_sample.png)" if quantiles else "(no per-sample records)",
        "",
        *cifar_section(),
    ]  # fmt: skip
    return write_atomically(folder.with_suffix(".md"), "\n".join(lines))
