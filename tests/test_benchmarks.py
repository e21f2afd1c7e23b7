"""`make bench`'s runner in its tiny mode: every benchmark's code path runs once and the report files are
written with every figure (timings are never asserted)."""

from __future__ import annotations

import json

import pytest

from benchmarks import run


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tiny_run_writes_the_json_and_the_markdown(tmp_path):
    assert run.main(["--mode", "tiny", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "benchmarks.json").read_text())
    keys = {figure["key"] for figure in results["figures"]}
    assert {"framework.digits_logging", "framework.plain_loop", "per_sample.both", "per_sample.both_fashion_mnist",
            "gpu.images_per_second", "blockkd.digits_cnn_small.blockkd", "data.cifar_loader",
            "data.teacher_cache_fashion_mnist"} <= keys
    assert any(key.startswith("policy.") and key.endswith(".cifar_step") for key in keys)
    for figure in results["figures"]:
        assert figure["setup"] and figure["variants"], figure["key"]
        if figure["bound"] is not None:
            assert figure["within_bound"] == (figure["value"] <= figure["bound"])
        if figure["at_least"] is not None:
            assert figure["within_bound"] == (figure["value"] >= figure["at_least"])
    assert results["environment"]["torch"] and results["mode"] == "tiny"
    report = (tmp_path / "benchmarks.md").read_text()
    assert all(f"`{key}`" in report for key in keys)
