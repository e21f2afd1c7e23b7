"""The studies ``make study`` runs: which data, pair, methods, seeds and budget, in one place.

Every method is a config-axis value of one ``distill-sweep`` (its layers joined by ``+``: the method and,
where the data set needs one, its adjustment), stacked on ``base + data + pair``; every run has the same
epoch budget. ``quick`` is the reduced version the test suite runs: CE, the KD grid, TALS and Block-KD
(``quick_methods()``), 2 seeds, a tiny budget, for the code path, not for the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distill.layers import CONFIGS, adjustment_layers

BASELINE = "grid best (val)"


def method(name: str, *adjustments: str) -> str:
    """A config-axis value: ``configs/methods/<name>.yaml`` plus adjustment layers (paths under configs/)."""
    return "+".join([str(CONFIGS / "methods" / f"{name}.yaml"), *(str(CONFIGS / layer) for layer in adjustments)])


@dataclass(frozen=True)
class Plan:
    """One study.

    Attributes:
        name: the study's name (its sweep folder and its results folder ``docs/results/<name>``).
        title: what it compares, in words.
        data, pair: the layers ``configs/data/<data>.yaml`` and ``configs/pairs/<pair>.yaml``.
        methods: config-axis values (``method(...)``), one configuration each (the grid: one per T).
        seeds: seeds 0..seeds-1 for every configuration.
        extra: arguments given to every run (the common budget).
        design: why this teacher, student and budget (printed in the report).
        quick_methods: the methods of ``make study QUICK=1`` (a code-path check the test suite runs).
    """

    name: str
    title: str
    data: str
    pair: str
    methods: tuple[str, ...]
    seeds: int
    extra: tuple[str, ...] = ()
    design: str = ""
    quick_methods: tuple[str, ...] = ()
    quick_extra: tuple[str, ...] = field(default=(
        # Batch counts of 2, not 1: the command line reads 1 as the fraction 1.0, every batch.
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
        "--trainer.limit_test_batches=2", "--trainer.num_sanity_val_steps=0", "--trainer.check_val_every_n_epoch=1",
    ))  # fmt: skip

    def layers(self) -> list[str]:
        return [str(CONFIGS / "base.yaml"), str(CONFIGS / "data" / f"{self.data}.yaml"),
                str(CONFIGS / "pairs" / f"{self.pair}.yaml")]  # fmt: skip


def quick_methods() -> tuple[str, ...]:
    """The reduced set ``QUICK=1`` runs: the baseline, the grid it is tuned from, TALS and Block-KD."""
    return method("ce"), method("grid"), method("tals"), method("kd", "methods/blockkd.yaml")


def study_methods(data: str) -> tuple[str, ...]:
    """Every method of the study on ``data``, with that data set's adjustments where they exist."""
    def adjusted(name: str) -> str:
        return method(name, *(str(path.relative_to(CONFIGS)) for path in adjustment_layers(name, data)))

    names = ("ce", "grid", "lskd", "kd_lskd_weights", "ctkd_global", "ctkd_instance", "max_logit",
             "max_logit_teacher", "tals", "dkd", "ttm", "wttm")  # fmt: skip
    # kd_lskd_weights: LSKD's T and weights without the z-score (is the gain the z-score's?); Block-KD on KD.
    return (*(adjusted(name) for name in names), method("kd", "methods/blockkd.yaml"))


STUDIES: dict[str, Plan] = {
    plan.name: plan
    for plan in (
        Plan(
            name="fashion_mnist",
            title="Fashion-MNIST, 1,000 training images, cnn_large teacher -> cnn_tiny student",
            data="fashion_mnist",
            pair="fashion_mnist_cnn-cnn_tiny",
            methods=study_methods("fashion_mnist"),
            quick_methods=quick_methods(),
            seeds=5,
            # The study's budget (every method alike): 100 images per class, batch 64, 40 epochs (640 steps), lr
            # x0.1 at epochs 30 and 36, validation every 5 epochs (the last epoch's selects the grid's T).
            extra=("--data.init_args.train_per_class=100", "--data.init_args.batch_size=64", "--trainer.max_epochs=40",
                   "--model.lr_scheduler.init_args.milestones=[30,36]", "--trainer.check_val_every_n_epoch=5"),
            design=(
                "The teacher (cnn_large, 57k parameters) is trained here on all 55,000 training images; the student "
                "(cnn_tiny, 1.4k parameters) sees only 100 images per class (seeded, stratified), so the teacher "
                "knows much the student cannot learn from its labels: a capacity gap and a data gap. Validation "
                "(5,000 held-out training images) selects the grid's temperature; test (10,000) is reported."
            ),
        ),
        Plan(
            name="digits",
            title="scikit-learn digits, digits_cnn teacher -> mlp_small student",
            data="digits",
            pair="digits_cnn-mlp_small",
            methods=study_methods("digits"),
            quick_methods=quick_methods(),
            seeds=5,
            design=(
                "The shipped digits teacher (cnn_large, 99.72% test) into a 2.4k-parameter MLP on 1,293 training "
                "images, 30 epochs; 360 test images, so one image is 0.28 points."
            ),
        ),
    )
}
