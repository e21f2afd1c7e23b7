"""What the observer callbacks add to a training epoch: ``PerSampleStatistics`` and ``TemperatureMonitor``.

The default digits run (shipped teacher -> mlp_small, TALS, cached teacher, TensorBoard logger,
validation every epoch, the callbacks' settings of ``configs/base.yaml``) with no observer callbacks,
with ``PerSampleStatistics``, and with both, epochs timed from ``on_train_epoch_start`` to the end of
``on_train_epoch_end`` (validation, the record file and the epoch histograms included). A second
baseline run is an A/A control: its ratio to the first is this machine's noise floor at that moment.

- ``per_sample.statistics``: PerSampleStatistics on / off. Reported.
- ``per_sample.both``: both callbacks on / off. Bound 1.03.
- ``per_sample.noise_floor``: the A/A control.
"""

from __future__ import annotations

import tempfile
import warnings

import lightning as L
import yaml
from lightning.pytorch.loggers import TensorBoardLogger

from benchmarks.framework_overhead import UnitTimer
from benchmarks.harness import Budget, Clock, Variant, budget, comparison, device, interleave
from callbacks import PerSampleStatistics, TemperatureMonitor
from distill.data import DigitsDataModule
from distill.layers import CONFIGS
from distill.module import DistillationModule


def every_n_steps() -> int:
    """``PerSampleStatistics.every_n_steps`` as the config layers of the digits run set it."""
    value = 50
    for layer in ("base.yaml", "data/digits.yaml"):
        settings = yaml.safe_load((CONFIGS / layer).read_text()) or {}
        value = ((settings.get("per_sample_statistics") or {}).get("init_args") or {}).get("every_n_steps", value)
    return int(value)


def run(mode: str) -> list:
    warnings.filterwarnings("ignore")
    on = device()
    clock = Clock(on)
    plan = budget(mode, Budget(repeats=8, warmup=1, timed=6))
    root = tempfile.mkdtemp(prefix="bench-observers-")
    every = every_n_steps()

    def fit(name: str, observers: list) -> list[float]:
        L.seed_everything(0, verbose=False)
        timer = UnitTimer(clock, plan.warmup)
        trainer = L.Trainer(
            accelerator="auto", devices=1, max_epochs=plan.warmup + plan.timed, log_every_n_steps=5,
            num_sanity_val_steps=0, logger=TensorBoardLogger(root, name=name.replace(" ", "_"), default_hp_metric=False),
            callbacks=[*observers, timer], enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False,
        )  # fmt: skip
        trainer.fit(DistillationModule(), DigitsDataModule(batch_size=64))
        return timer.units

    variants = [
        Variant("no observers", lambda: fit("baseline", [])),
        Variant("no observers again", lambda: fit("baseline2", [])),
        Variant("statistics", lambda: fit("statistics", [PerSampleStatistics(every_n_steps=every)])),
        Variant("both", lambda: fit("both", [PerSampleStatistics(every_n_steps=every), TemperatureMonitor()])),
    ]
    measurement = interleave(variants, plan.repeats, on)
    setup = {"data": "digits, batch 64, 21 steps an epoch, validation every epoch", "every_n_steps": every,
             "log_every_n_steps": 5, "unit": "epoch"}  # fmt: skip
    return [
        comparison("per_sample.statistics", "PerSampleStatistics on vs off, digits epoch", measurement,
                   "statistics", "no observers", on, setup=setup),
        comparison("per_sample.both", "PerSampleStatistics and TemperatureMonitor on vs off, digits epoch",
                   measurement, "both", "no observers", on, bound=1.03, setup=setup),
        comparison("per_sample.noise_floor", "A/A control: the same baseline run twice", measurement,
                   "no observers again", "no observers", on, setup=setup),
    ]  # fmt: skip
