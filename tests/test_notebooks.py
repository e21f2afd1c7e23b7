"""Every notebook executes, top to bottom, against real runs: the TALS and CTKD 2-epoch runs of
``tests.per_sample_runs`` (``$DISTILL_RUN_DIRS``). A cell that raises (the notebooks assert on their
data too) fails the test, so ``make test`` catches a broken notebook. ``make notebooks`` does the
same with nbmake against runs it makes itself."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO
from tests.per_sample_runs import ctkd_run, tals_run  # noqa: F401

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_against_real_runs(path, tals_run, ctkd_run, monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_RUN_DIRS", os.pathsep.join([str(tals_run), str(ctkd_run)]))
    notebook = nbformat.read(path, as_version=4)
    assert any("parameters" in cell.metadata.get("tags", []) for cell in notebook.cells), "no parameters cell"
    resources = {"metadata": {"path": str(path.parent)}}  # run from notebooks/, as nbmake does
    client = NotebookClient(notebook, timeout=120, kernel_name="python3", resources=resources)
    client.execute()  # raises CellExecutionError on the first failing cell
    nbformat.write(notebook, tmp_path / path.name)  # the executed copy, for a look when it fails
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.get("output_type") == "error"]
    assert sum("image/png" in output.get("data", {}) for output in outputs) >= 6  # every section plotted
    text = "".join(output.get("text", "") for output in outputs)
    assert str(tals_run) in text and str(ctkd_run) in text
