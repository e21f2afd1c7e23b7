"""The config layers of an experiment: ``make train DATA=<data> PAIR=<pair> METHOD=<method>`` in Python.

    layers = experiment_layers("kd")           # base, data/digits, pairs/digits_cnn-mlp_small, methods/kd
    cli_main(["fit", *config_args(layers)])

A data set's adjustment of a method, ``configs/<data>/<method>.yaml`` (or the file named by the method's
family, ``configs/digits/ctkd.yaml`` for ``ctkd_global`` and ``ctkd_instance``, where the family is not
itself a method), is appended when it exists, as the Makefile does.
"""

from __future__ import annotations

from pathlib import Path

# The repository's configs/ (the project runs from its checkout, installed in editable mode).
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def experiment_layers(method: str, data: str = "digits", pair: str = "digits_cnn-mlp_small") -> list[Path]:
    """``[base, data, pair, method, adjustment?]`` as paths under ``configs/``."""
    layers = [CONFIGS / "base.yaml", CONFIGS / "data" / f"{data}.yaml", CONFIGS / "pairs" / f"{pair}.yaml",
              CONFIGS / "methods" / f"{method}.yaml"]  # fmt: skip
    return layers + adjustment_layers(method, data)


def adjustment_layers(method: str, data: str) -> list[Path]:
    """The data set's adjustment of ``method``: ``configs/<data>/<method>.yaml``, else the file of its family
    (``configs/digits/ctkd.yaml`` for ``ctkd_global``), but only where the family is not a method of its own
    (``kd_lskd_weights`` never takes ``kd``'s adjustment)."""
    own = CONFIGS / data / f"{method}.yaml"
    if own.is_file():
        return [own]
    family = method.split("_")[0]
    shared = CONFIGS / data / f"{family}.yaml"
    if family != method and not (CONFIGS / "methods" / f"{family}.yaml").is_file() and shared.is_file():
        return [shared]
    return []


def config_args(layers: Path | str | list[Path | str]) -> list[str]:
    """``--config=<layer>`` for each layer, in order."""
    return [f"--config={layer}" for layer in (layers if isinstance(layers, list) else [layers])]
