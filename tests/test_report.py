"""``distill-report``: seed statistics against scipy and the textbook formulas, and the table of a sweep
folder whose runs' ``metrics.json`` the test writes with known numbers."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy import stats

from distill import sweep
from distill.report import build_report
from distill.report import main as report_main
from distill.report.statistics import PAIRED, WELCH, compare, mean_std
from distill.run_metrics import write_run_metrics
from tests.test_sweep import GRID_CONFIG, layers
# Fixed numbers (test top-1 in %, by seed), e.g. TALS-like 83.27 +- 0.20 against a KD run.
ROW = {0: 83.41, 1: 83.05, 2: 83.36}
BASELINE_SAME_SEEDS = {0: 83.20, 1: 82.95, 2: 83.02}
BASELINE_OTHER_SEEDS = {0: 83.20, 3: 82.71, 4: 83.02, 5: 82.88}


def test_paired_comparison_matches_scipy_and_the_hand_formula():
    result = compare(ROW, BASELINE_SAME_SEEDS)
    assert result.test == PAIRED
    differences = np.array([ROW[seed] - BASELINE_SAME_SEEDS[seed] for seed in (0, 1, 2)])
    n = len(differences)
    mean, se = differences.mean(), differences.std(ddof=1) / math.sqrt(n)
    t, df = mean / se, n - 1
    half_width = stats.t.ppf(0.975, df) * se
    assert result.df == df
    assert result.difference == pytest.approx(mean, abs=1e-12)
    assert (result.ci_low, result.ci_high) == pytest.approx((mean - half_width, mean + half_width), abs=1e-12)
    assert result.p_value == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-10)
    scipy_result = stats.ttest_rel(list(ROW.values()), list(BASELINE_SAME_SEEDS.values()))
    assert result.p_value == pytest.approx(scipy_result.pvalue)


def test_welch_comparison_matches_scipy_and_the_welch_satterthwaite_formula():
    result = compare(ROW, BASELINE_OTHER_SEEDS)
    assert result.test == WELCH
    a, b = np.array(list(ROW.values())), np.array(list(BASELINE_OTHER_SEEDS.values()))
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    difference, se = a.mean() - b.mean(), math.sqrt(va + vb)
    half_width = stats.t.ppf(0.975, df) * se
    assert result.df == pytest.approx(df, rel=1e-12)
    assert result.difference == pytest.approx(difference, abs=1e-12)
    interval = (difference - half_width, difference + half_width)
    assert (result.ci_low, result.ci_high) == pytest.approx(interval, abs=1e-10)
    assert result.p_value == pytest.approx(2 * stats.t.sf(abs(difference / se), df), rel=1e-10)
    assert result.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_no_test_without_two_seeds_or_without_variance():
    one_seed = compare({0: 80.0}, BASELINE_SAME_SEEDS)
    assert one_seed.test.startswith("n/a") and math.isnan(one_seed.p_value) and math.isnan(one_seed.ci_low)
    shifted = compare({seed: value + 0.5 for seed, value in BASELINE_SAME_SEEDS.items()}, BASELINE_SAME_SEEDS)
    assert shifted.test == "n/a: no variance" and shifted.difference == pytest.approx(0.5)
    assert mean_std([1.0, 2.0, 4.0]) == pytest.approx((7 / 3, np.std([1.0, 2.0, 4.0], ddof=1)))
    assert math.isnan(mean_std([1.0])[1])


def finish(folder, label: str, seed: int, test: float, val: float) -> None:
    """Write the run's metrics.json as distill fit does, with the given test and val top-1 (fractions)."""
    write_run_metrics(folder / label / f"seed{seed}", {"test/acc1": test, "val/acc1": val}, epochs=30, steps=630,
                      seed=seed, fit_seconds=30.0, config_layers=[str(GRID_CONFIG)])  # fmt: skip


def test_report_rows_grid_mean_and_grid_best_chosen_on_validation(tmp_path, capsys):
    plan = [*layers(GRID_CONFIG), "--seeds", "2", "--sweep_dir", str(tmp_path), "--name", "g", "--dry_run"]
    assert sweep.main(plan) == 0
    folder = tmp_path / "g"
    # T=4 is best on test, T=2 best on validation: the selection must follow validation.
    numbers = {  # label: [(test, val) for seeds 0, 1]
        "T=1.0": [(0.90, 0.90), (0.92, 0.91)],
        "T=2.0": [(0.94, 0.99), (0.95, 0.98)],
        "T=4.0": [(0.97, 0.95), (0.99, 0.96)],
        "T=8.0": [(0.93, 0.92), None],  # seed 1 unfinished
    }
    for label, runs in numbers.items():
        for seed, run in enumerate(runs):
            if run is not None:
                finish(folder, label, seed, *run)
    assert report_main([str(folder), "--baseline", "grid best (val)"]) == 0
    with (folder / "results.csv").open() as file:
        rows = {row["configuration"]: row for row in csv.DictReader(file)}
    assert list(rows) == ["T=1.0", "T=2.0", "T=4.0", "T=8.0", "grid mean", "grid best (val)"]
    assert float(rows["T=4.0"]["test_acc1_mean"]) == pytest.approx(98.0)
    assert float(rows["T=4.0"]["test_acc1_std"]) == pytest.approx(np.std([97.0, 99.0], ddof=1))  # sample std
    one_seed = rows["T=8.0"]
    assert (one_seed["n_seeds"], one_seed["test_acc1_std"], one_seed["test"]) == ("1", "", "n/a: fewer than 2 seeds")
    best = rows["grid best (val)"]
    assert best["selected"] == "T=2.0" and float(best["test_acc1_mean"]) == pytest.approx(94.5)
    # grid mean: seed 0 only (T=8.0 lacks seed 1), mean over the 4 temperatures of seed 0.
    grid_mean = rows["grid mean"]
    assert grid_mean["seeds"] == "0" and float(grid_mean["test_acc1_mean"]) == pytest.approx((90 + 94 + 97 + 93) / 4)
    t4 = compare({0: 97.0, 1: 99.0}, {0: 94.0, 1: 95.0})
    assert rows["T=4.0"]["test"] == PAIRED and float(rows["T=4.0"]["p_value"]) == pytest.approx(t4.p_value)
    assert float(rows["T=4.0"]["ci95_low"]) == pytest.approx(t4.ci_low)
    markdown = (folder / "results.md").read_text()
    assert "| grid best (val): T=2.0 | 2 | 94.50 ± 0.71 |" in markdown
    assert "Not finished (1, left out): T=8.0/seed1." in markdown
    assert "![accuracy per configuration](results.png)" in markdown
    assert (folder / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_report_of_a_sweep_without_finished_runs_is_one_line(tmp_path, capsys):
    sweep.main([*layers(GRID_CONFIG), "--sweep_dir", str(tmp_path), "--name", "g", "--dry_run"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        report_main([str(tmp_path / "g")])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and error.count("\n") == 1 and "no run of this sweep has finished" in error
    with pytest.raises(Exception, match="not a sweep folder"):
        build_report(tmp_path)
