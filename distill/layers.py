"""The config layers of an experiment: ``make train DATA=<data> PAIR=<pair> METHOD=<method>`` in Python.

    layers = experiment_layers("kd")           # base, data/digits, pairs/digits_cnn-mlp_small, methods/kd
    cli_main(["fit", *config_args(layers)])

A data set's adjustment of a method, ``configs/<data>/<method>.yaml`` (or the file named by the method's
family, ``configs/digits/ctkd.yaml`` for ``ctkd_global`` and ``ctkd_instance``), is appended when it exists,
as the Makefile does.
"""

from __future__ import annotations

from pathlib import Path

# The repository's configs/ (the project runs from its checkout, installed in editable mode).
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def experiment_layers(method: str, data: str = "digits", pair: str = "digits_cnn-mlp_small") -> list[Path]:
    """``[base, data, pair, method, adjustment?]`` as paths under ``configs/``."""
    layers = [CONFIGS / "base.yaml", CONFIGS / "data" / f"{data}.yaml", CONFIGS / "pairs" / f"{pair}.yaml",
              CONFIGS / "methods" / f"{method}.yaml"]  # fmt: skip
    adjustments = {CONFIGS / data / f"{method}.yaml", CONFIGS / data / f"{method.split('_')[0]}.yaml"}
    return layers + sorted(path for path in adjustments if path.is_file())


def config_args(layers: Path | str | list[Path | str]) -> list[str]:
    """``--config=<layer>`` for each layer, in order."""
    return [f"--config={layer}" for layer in (layers if isinstance(layers, list) else [layers])]
