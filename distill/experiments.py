"""The papers' experiments as config layers: every CIFAR-100 teacher/student pair x method of the published
tables, the TALS recipe (CIFAR-100 ResNet-34 -> ResNet-18 with SAM, AutoAugment and Cutout) and ImageNet
ResNet-34 -> ResNet-18, each with the command that runs it by name and the number its paper reports.

    from distill.experiments import EXPERIMENTS
    experiment = EXPERIMENTS[0]
    experiment.name              # cifar100/resnet32x4-resnet8x4/kd
    experiment.layers()          # [configs/base.yaml, configs/data/cifar100.yaml, configs/pairs/..., ...]
    experiment.command()         # make experiment NAME=cifar100/resnet32x4-resnet8x4/kd
    experiment.long_command()    # make train DATA=cifar100 PAIR=resnet32x4-resnet8x4 METHOD=kd

An experiment is ``make train DATA= PAIR= METHOD=`` (which appends ``configs/<data>/<method>.yaml`` where one
exists) plus the per-pair layers the published recipe needs (``extra``). ``make experiment NAME=<name>``
(``python -m distill.experiments run <name>``, distill/experiments_cli.py) runs it by name; docs/experiments.md
shows every one with its further layers, ``readme_table()`` the README's table of published numbers;
tests/test_experiments.py builds every one and checks its hyperparameters against the papers.

    python -m distill.experiments list | run <name> [distill fit arguments ...] | readme
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from distill.layers import CONFIGS, experiment_layers

CIFAR_PAIRS = (
    "resnet32x4-resnet8x4", "vgg13-vgg8", "wrn_40_2-wrn_16_2", "wrn_40_2-wrn_40_1", "resnet56-resnet20",
    "resnet110-resnet32", "resnet32x4-ShuffleV2",
)  # fmt: skip
# The methods of the CIFAR-100 table, in its column order (max_logit and tals have no published CIFAR numbers).
CIFAR_METHODS = ("kd", "lskd", "ctkd_global", "max_logit", "tals", "dkd", "zdkd", "ttm", "wttm")
TALS_PAIR = "ResNet34-ResNet18"
TALS_RECIPE = ("optim/sam.yaml", "cifar100/autoaugment_cutout.yaml")
IMAGENET_PAIR = "imagenet_resnet34-imagenet_resnet18"

# DKD's beta by teacher on CIFAR-100 (mdistiller's per-pair configs): 8 (the method's default) for resnet32x4.
_DKD_BETA_LAYER = {"vgg13": "dkd_beta6", "wrn_40_2": "dkd_beta6", "resnet56": "dkd_beta2", "resnet110": "dkd_beta2"}
# zDKD as the published runs were trained (the LSKD authors' logs); resnet32x4's pairs use the method's rule.
_ZDKD_LAYER = {
    "vgg13-vgg8": "zdkd_weight15_beta2", "resnet110-resnet32": "zdkd_weight15_beta2",
    "wrn_40_2-wrn_16_2": "zdkd_weight12_beta2", "wrn_40_2-wrn_40_1": "zdkd_weight12_beta2",
    "resnet56-resnet20": "zdkd_tau3_weight18_beta2",
}  # fmt: skip
_LSKD_LAYER = {"vgg13-vgg8": "lskd_tau3"}

# Published CIFAR-100 top-1 (%), best epoch, mean of 4-5 runs (3 for different families in TTM), per pair in
# CIFAR_PAIRS order.
_CIFAR_PUBLISHED = {
    "kd": ("73.33", "72.98", "74.92", "73.54", "70.66", "73.08", "74.45"),
    "lskd": ("76.62", "74.36", "76.11", "74.37", "71.43", "74.17", "75.56"),
    "ctkd_global": ("73.39", "73.52", "75.45", "73.93", "71.19", "73.52", "75.37"),
    "dkd": ("76.32", "74.68", "76.24", "74.81", "71.97", "74.11", "77.07"),
    "zdkd": ("77.01", "74.81", "76.39", "74.89", "72.32", "74.29", "77.37"),
    "ttm": ("76.17", "74.33", "76.23", "74.32", "71.83", "73.97", "76.57"),
    "wttm": ("76.06", "74.44", "76.37", "74.58", "71.92", "74.13", "76.55"),
}
_CIFAR_SOURCE = {
    "kd": "CRD (Tian et al., ICLR 2020), repeated in the DKD, LSKD and TTM tables",
    "lskd": "LSKD (Sun et al., CVPR 2024), KD + Ours",
    "ctkd_global": "CTKD (Li et al., AAAI 2023), as in the LSKD tables",
    "dkd": "DKD (Zhao et al., CVPR 2022)",
    "zdkd": "LSKD (Sun et al., CVPR 2024), DKD + Ours",
    "ttm": "TTM (Zheng & Yang, ICLR 2024), Tables 1 and 3",
    "wttm": "TTM (Zheng & Yang, ICLR 2024), Tables 1 and 3",
}


@dataclass(frozen=True)
class Experiment:
    """One published experiment.

    Attributes:
        data: the data layer, ``configs/data/<data>.yaml``.
        pair: the teacher/student layer, ``configs/pairs/<pair>.yaml``.
        method: the method layer, ``configs/methods/<method>.yaml``.
        extra: further layers (paths under ``configs/``), in order, after those ``make train`` stacks.
        published: the paper's top-1 in percent, as printed (``None``: no published number).
        source: where the number comes from.
        note: what differs from a plain run, in a few words (shown in the docs).
    """

    data: str
    pair: str
    method: str
    extra: tuple[str, ...] = ()
    published: str | None = None
    source: str = ""
    note: str = ""

    @property
    def name(self) -> str:
        """``<data>/<pair>/<method>``, the run name the CLI gives it."""
        return f"{self.data}/{self.pair}/{self.method}"

    @property
    def is_sweep(self) -> bool:
        """A grid of fixed temperatures is several runs: ``distill-sweep`` runs it, not ``make train``."""
        return self.method == "grid"

    def layers(self) -> list[Path]:
        """Every config layer, in order: base, data, pair, method, the data set's adjustment, the extra layers."""
        return experiment_layers(self.method, self.data, self.pair) + [CONFIGS / layer for layer in self.extra]

    def further_layers(self) -> list[str]:
        """The layers after base, data, pair and method, as paths under ``configs/`` (e.g.
        ``["cifar100/dkd_beta6.yaml"]``): the data set's adjustment of the method, then ``extra``."""
        return [str(path.relative_to(CONFIGS)) for path in self.layers()[4:]]

    def command(self) -> str:
        """The short command that runs it from the repository root: ``make experiment NAME=<name>``."""
        return f"make experiment NAME={self.name}"

    def long_command(self) -> str:
        """The same run with every layer spelled out: ``make train DATA= PAIR= METHOD= ARGS="--config=..."`` (the
        grid: ``distill-sweep --config ...``)."""
        extra = " ".join(f"--config=configs/{layer}" for layer in self.extra)
        if self.is_sweep:
            layers = " ".join(f"--config {path.relative_to(CONFIGS.parent)}" for path in self.layers())
            return f".venv/bin/distill-sweep {layers}"
        command = f"make train DATA={self.data} PAIR={self.pair} METHOD={self.method}"
        return f'{command} ARGS="{extra}"' if extra else command


def _cifar_extra(pair: str, method: str) -> tuple[str, ...]:
    """The per-pair layers of the published recipe (under ``configs/``)."""
    teacher = pair.split("-")[0]
    if method == "dkd" and teacher in _DKD_BETA_LAYER:
        return (f"cifar100/{_DKD_BETA_LAYER[teacher]}.yaml",)
    if method == "zdkd" and pair in _ZDKD_LAYER:
        return (f"cifar100/{_ZDKD_LAYER[pair]}.yaml",)
    if method == "lskd" and pair in _LSKD_LAYER:
        return (f"cifar100/{_LSKD_LAYER[pair]}.yaml",)
    if method in ("ttm", "wttm"):
        return (f"cifar100/{method}/{pair}.yaml",)
    return ()


def _cifar_experiments() -> list[Experiment]:
    experiments = []
    for method in CIFAR_METHODS:
        for index, pair in enumerate(CIFAR_PAIRS):
            published = _CIFAR_PUBLISHED.get(method)
            experiments.append(
                Experiment(
                    "cifar100", pair, method, _cifar_extra(pair, method),
                    published[index] if published else None, _CIFAR_SOURCE.get(method, ""),
                )  # fmt: skip
            )
    return experiments


TALS_EXPERIMENTS = [
    Experiment("cifar100", TALS_PAIR, "tals", TALS_RECIPE, "83.27 ± 0.20", "TALS abstract (3 seeds)"),
    Experiment("cifar100", TALS_PAIR, "grid", TALS_RECIPE, "83.11", "TALS abstract (KD grid average, 4 runs)",
               "T = 1, 2, 4, 8; one run each"),  # fmt: skip
    Experiment("cifar100", TALS_PAIR, "dkd", TALS_RECIPE, "83.19", "TALS abstract",
               "DKD's default beta 8: TALS does not give its DKD settings"),  # fmt: skip
]

IMAGENET_EXPERIMENTS = [
    Experiment("imagenet", IMAGENET_PAIR, "kd", (), "71.03", "DKD (Zhao et al., CVPR 2022); 70.66 in the TTM table"),
    Experiment("imagenet", IMAGENET_PAIR, "lskd", (), "71.42", "LSKD (Sun et al., CVPR 2024), Table 3"),
    Experiment("imagenet", IMAGENET_PAIR, "ctkd_global", (), "71.32", "CTKD (Li et al., AAAI 2023); 71.38 in LSKD"),
    Experiment("imagenet", IMAGENET_PAIR, "dkd", (), "71.70", "DKD (Zhao et al., CVPR 2022)"),
    Experiment("imagenet", IMAGENET_PAIR, "ttm", (), None, "", "no published TTM run; T and beta are this project's"),
    Experiment("imagenet", IMAGENET_PAIR, "wttm", (), "72.19", "TTM (Zheng & Yang, ICLR 2024), Table 5"),
]

CIFAR_EXPERIMENTS = _cifar_experiments()
EXPERIMENTS: list[Experiment] = CIFAR_EXPERIMENTS + TALS_EXPERIMENTS + IMAGENET_EXPERIMENTS


def readme_table() -> str:
    """The README's tables of published top-1 (%), markdown, without a trailing newline.

    First CIFAR-100: one row per pair of ``CIFAR_PAIRS``, one column per method of ``CIFAR_METHODS`` that has a
    published number; the cell in row ``<pair>``, column ``<method>`` is the number of ``cifar100/<pair>/<method>``.
    Then the TALS recipe and ImageNet experiments, one row each: name, published number, source.
    tests/test_experiments.py checks that README.md, between its ``experiments`` marker comments, holds this text.
    """
    published = {(e.pair, e.method): e.published for e in CIFAR_EXPERIMENTS}
    methods = [method for method in CIFAR_METHODS if any(published[pair, method] for pair in CIFAR_PAIRS)]
    lines = [
        "CIFAR-100 top-1 (%) as published (sources, layers and costs: docs/experiments.md); each cell runs as"
        " `make experiment NAME=cifar100/<pair>/<method>` (`make experiments` lists every name):",
        "",
        "| pair | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    lines += [f"| {pair} | " + " | ".join(published[pair, method] or "—" for method in methods) + " |"
              for pair in CIFAR_PAIRS]  # fmt: skip
    lines += [
        "",
        "The TALS recipe (CIFAR-100 ResNet-34 -> ResNet-18, SAM + AutoAugment + Cutout) and ImageNet ResNet-34 ->"
        " ResNet-18; each runs as `make experiment NAME=<experiment>`:",
        "",
        "| experiment | published top-1 (%) | source |",
        "|---|---:|---|",
    ]
    lines += [f"| `{e.name}` | {e.published or '—'} | {e.source or '—'} |"
              for e in TALS_EXPERIMENTS + IMAGENET_EXPERIMENTS]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":  # python -m distill.experiments: the command line lives in distill.experiments_cli
    from distill.experiments_cli import main

    sys.exit(main())
