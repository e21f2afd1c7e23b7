"""`make study QUICK=1` as the suite runs it: the reduced Fashion-MNIST study (CE, the KD grid, TALS, Block-KD;
2 seeds; a tiny budget) through distill-sweep and distill-report, its results folder and generated document;
and the document generator on fixed numbers (every sentence of the reading computed from them)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from distill.study.document import reading, verdict
from distill.report.statistics import compare
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
