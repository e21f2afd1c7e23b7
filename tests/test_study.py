"""`make study QUICK=1` as the suite runs it: the reduced Fashion-MNIST study (CE, the KD grid, TALS, Block-KD;
2 seeds; a tiny budget) through distill-sweep and distill-report, its results folder and generated document;
and the document generator on fixed numbers (every sentence of the reading computed from them, none read as a
verdict where a side collapsed) and its teacher line (from the pair config and the registry)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from distill.study.document import reading, teacher_line, verdict
from distill.study.plans import STUDIES
from distill.report.statistics import compare
from teachers.registry import TEACHERS
from tests.conftest import REPO


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_study_writes_its_results_and_document(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "distill.study", "run", "--study", "fashion_mnist", "--quick", "--jobs", "2",
         "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "results")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "results" / "fashion_mnist"
    for name in ("results.csv", "results.md", "results.png", "runs.csv", "per_sample.csv", "per_sample.png",
                 "study.json"):  # fmt: skip
        assert (folder / name).is_file(), name
    with (folder / "runs.csv").open() as stream:
        runs = list(csv.DictReader(stream))
    configurations = {row["configuration"] for row in runs}
    assert configurations == {"ce", "grid,T=1.0", "grid,T=2.0", "grid,T=4.0", "grid,T=8.0", "tals", "kd+blockkd"}
    assert len(runs) == 2 * len(configurations)  # 2 seeds each
    with (folder / "per_sample.csv").open() as stream:
        quantities = {(row["configuration"], row["quantity"]) for row in csv.DictReader(stream)}
    assert ("tals", "alpha") in quantities and not any(name == "ce" for name, _ in quantities)  # CE has no teacher
    study = json.loads((folder / "study.json").read_text())
    assert study["quick"] is True and study["seeds"] == 2 and study["wall_seconds"] > 0
    document = (tmp_path / "results" / "fashion_mnist.md").read_text()
    assert "QUICK" in document and "| grid best (val): T=" in document and "![per-sample distributions]" in document
    assert "Does TALS, in one run with no constant to tune, beat the tuned grid?" in document


def runs_rows(values: dict[str, dict[int, float]]) -> list[dict]:
    return [{"configuration": name, "seed": str(seed), "test_acc1": str(value)}
            for name, by_seed in values.items() for seed, value in by_seed.items()]  # fmt: skip


def test_reading_states_what_the_numbers_say():
    values = {
        "ce": {0: 70.0, 1: 71.0, 2: 70.5},
        "grid,T=2.0": {0: 74.0, 1: 74.6, 2: 74.2},
        "grid,T=4.0": {0: 75.0, 1: 75.5, 2: 75.1},
        "tals": {0: 76.0, 1: 76.4, 2: 76.1},
    }
    results = [{"configuration": "grid best (val)", "selected": "grid,T=4.0", "test": "", "ci95_low": "",
                "ci95_high": ""},
               {"configuration": "tals", "selected": "", "test": "paired t", "ci95_low": "0.5", "ci95_high": "1.3"}]
    lines = reading(results, runs_rows(values))
    tals = compare(values["tals"], values["grid,T=4.0"])
    assert verdict(tals) == "better"
    assert any(line.startswith("Design check:") and "holds" in line for line in lines)
    assert any(f"TALS vs the grid's best T: {tals.difference:+.2f} points" in line for line in lines)
    assert lines[-1].startswith("Against the validation-tuned KD (grid best (val)), at 95% confidence: better: tals;")


def results_rows(values: dict[str, dict[int, float]], selected: str,
                 tested: dict[str, tuple[float, float]]) -> list[dict]:
    """results.csv rows: each configuration's mean, the baseline row (the selected T), and the CI of ``tested``."""
    rows = [{"configuration": "grid best (val)", "selected": selected, "test": "", "ci95_low": "", "ci95_high": "",
             "test_acc1_mean": str(sum(values[selected].values()) / len(values[selected]))}]
    for name, by_seed in values.items():
        low, high = tested.get(name, ("", ""))
        rows.append({"configuration": name, "selected": "", "test": "paired t" if name in tested else "",
                     "ci95_low": str(low), "ci95_high": str(high),
                     "test_acc1_mean": str(sum(by_seed.values()) / len(by_seed))})
    return rows  # fmt: skip


def test_reading_gives_no_verdict_on_a_collapsed_comparison():
    values = {
        "ce": {0: 70.0, 1: 71.0, 2: 70.5},
        "grid,T=2.0": {0: 74.0, 1: 74.6, 2: 74.2},
        "grid,T=4.0": {0: 75.0, 1: 75.5, 2: 75.1},
        "lskd": {0: 73.0, 1: 73.8, 2: 73.1},
        "kd_lskd_weights": {0: 10.0, 1: 10.0, 2: 10.0},
    }
    # Without the rule the collapsed row is "worse" than the baseline and LSKD "better" than it by ~63 points.
    tested = {"lskd": (-3.0, -0.5), "kd_lskd_weights": (-66.0, -64.0)}
    lines = reading(results_rows(values, "grid,T=4.0", tested), runs_rows(values))
    z_score = next(line for line in lines if line.startswith("Does z-score's gain survive"))
    assert ("LSKD (z-scored) vs KD at T=2, CE 0.1, KD 9 (no z-score): not a like-for-like comparison: "
            "kd_lskd_weights collapsed (10.00%), so this says only that without the z-score these weights diverge "
            "at this learning rate.") in z_score  # fmt: skip
    assert "+63" not in z_score and "better" not in z_score
    lskd = compare(values["lskd"], values["grid,T=4.0"])
    assert f"LSKD vs the tuned grid: {lskd.difference:+.2f} points" in z_score  # the uncollapsed comparison stays
    assert any(line.startswith("Collapsed runs") and "kd_lskd_weights (10.00%)" in line for line in lines)
    assert lines[-1].startswith("Against the validation-tuned KD (grid best (val)), at 95% confidence: better: none; "
                                "worse: lskd; not compared (collapsed): kd_lskd_weights;")  # fmt: skip


def test_reading_gives_no_verdict_when_the_tuned_grid_or_a_grid_temperature_collapsed():
    values = {
        "ce": {0: 70.0, 1: 71.0, 2: 70.5},
        "grid,T=2.0": {0: 74.0, 1: 74.6, 2: 74.2},
        "grid,T=8.0": {0: 10.0, 1: 10.0, 2: 10.0},
        "tals": {0: 76.0, 1: 76.4, 2: 76.1},
    }
    chose_a_good_t = reading(results_rows(values, "grid,T=2.0", {"tals": (0.5, 1.3)}), runs_rows(values))
    assert any(line.startswith("Design check:") and " holds" in line for line in chose_a_good_t)
    tals = next(line for line in chose_a_good_t if line.startswith("Does TALS"))
    assert f"TALS vs the grid's best T: {compare(values['tals'], values['grid,T=2.0']).difference:+.2f} points" in tals
    assert "TALS vs the grid mean: not a like-for-like comparison: grid,T=8.0 collapsed (10.00%)" in tals
    tuning = next(line for line in chose_a_good_t if line.startswith("Tuning the temperature"))
    assert "vs the grid mean: not a like-for-like comparison: grid,T=8.0 collapsed (10.00%)" in tuning
    assert chose_a_good_t[-1].startswith("Against the validation-tuned KD (grid best (val)), at 95% confidence: "
                                         "better: tals;")  # fmt: skip

    chose_the_collapsed_t = reading(results_rows(values, "grid,T=8.0", {"tals": (60.0, 70.0)}), runs_rows(values))
    design = next(line for line in chose_the_collapsed_t if line.startswith("Design check:"))
    assert "not a like-for-like comparison: grid,T=8.0 collapsed (10.00%)" in design and "is not tested" in design
    assert not any("better" in line for line in chose_the_collapsed_t)
    assert chose_the_collapsed_t[-1] == (
        "Against the validation-tuned KD (grid best (val)): not a like-for-like comparison: grid,T=8.0 collapsed "
        "(10.00%), so this says only that grid,T=8.0 did not train at this recipe's learning rate."
    )


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_teacher_line_names_the_pair_teacher_from_the_registry(study):
    plan = STUDIES[study]
    entry = next(entry for entry in TEACHERS.values() if plan.pair.startswith(entry.name + "-"))
    line = teacher_line(plan, runs_rows({"ce": {0: 70.0}}))
    assert line.startswith(f"- Teacher: {entry.name} ({entry.architecture}, ")
    assert f"test top-1 {100 * entry.test_accuracy:.2f}% (`teachers/registry.py`)" in line
    assert f"`make teacher NAME={entry.name} DATA={entry.data}` (config `configs/teachers/{entry.name}.yaml`)" in line
    measured = [{**row, "teacher_acc1": value} for row, value in zip(runs_rows({"ce": {0: 70.0, 1: 71.0}}),
                                                                       ("90.50", "90.70"))]  # fmt: skip
    assert "measured again by the study's 2 runs: 90.50-90.70%" in teacher_line(plan, measured)
