"""The teacher-logit cache on Fashion-MNIST: a training epoch with the teacher's logits read back by sample
index, against the same epoch with the teacher run on every batch.

The shipped ``fashion_mnist_cnn`` teacher (cnn_large, 57k parameters) into ``mlp_small`` on the 55,000
training images (batch 128, 430 steps, Hinton KD, no validation, TensorBoard logging), epochs timed after
a warm-up epoch (the cached side's warm-up includes filling the cache: one teacher pass over the training
set at the start of fit, reported apart). ``tiny`` mode uses 20 images per class.
"""

from __future__ import annotations

import tempfile
import time
import warnings

import lightning as L

from benchmarks.framework_overhead import UnitTimer, quiet_trainer
from benchmarks.harness import Budget, Clock, Variant, budget, comparison, device, interleave
from distill.data import FashionMNISTDataModule
from distill.module import DistillationModule
from distill.policies import FixedTemperature


class FitStart(L.Callback):
    """Clock time from the start of fit to the first training batch (the cache fill, where there is one)."""

    def __init__(self, clock: Clock):
        self.clock, self.seconds, self._start = clock, 0.0, 0.0

    def setup(self, trainer, pl_module, stage):
        self._start = self.clock()

    def on_train_start(self, trainer, pl_module):
        self.seconds = self.clock() - self._start


def run(mode: str) -> list:
    warnings.filterwarnings("ignore")
    on = device()
    clock = Clock(on)
    plan = budget(mode, Budget(repeats=3, warmup=1, timed=2))
    per_class = 20 if mode == "tiny" else None
    root = tempfile.mkdtemp(prefix="bench-cache-")
    fills: list[float] = []

    def epochs(cache: bool) -> list[float]:
        L.seed_everything(0, verbose=False)
        timer, start = UnitTimer(clock, plan.warmup), FitStart(clock)
        module = DistillationModule(student="mlp_small", teacher="fashion_mnist_cnn", teacher_cache=cache,
                                    temperature_policy=FixedTemperature(), num_classes=10, input_shape=(1, 28, 28))
        data = FashionMNISTDataModule(batch_size=128, train_per_class=per_class)
        trainer = quiet_trainer(root, [timer, start], max_epochs=plan.warmup + plan.timed, log_every_n_steps=50)
        trainer.fit(module, data)
        if cache:
            fills.append(start.seconds)
        return timer.units

    started = time.perf_counter()
    measurement = interleave(
        [Variant("cached teacher", lambda: epochs(True)), Variant("teacher every batch", lambda: epochs(False))],
        plan.repeats, on,
    )  # fmt: skip
    figure = comparison(
        "data.teacher_cache_fashion_mnist",
        "Fashion-MNIST epoch, teacher logits cached vs the teacher run on every batch",
        measurement, "cached teacher", "teacher every batch", on,
        setup={"pair": "fashion_mnist_cnn (cnn_large) -> mlp_small", "train_images": "55,000" if per_class is None
               else f"{10 * per_class}", "batch": 128, "unit": "epoch",
               "cache_fill_ms": round(1000 * min(fills), 1) if fills else None,
               "benchmark_seconds": round(time.perf_counter() - started)},
        note="the cache is filled once at fit start (cache_fill_ms: one teacher pass over the training set)",
    )  # fmt: skip
    return [figure]
