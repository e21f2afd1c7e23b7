"""What the observer callbacks add to a training epoch: ``PerSampleStatistics`` and ``TemperatureMonitor``.

The default digits run (shipped teacher -> mlp_small, TALS, cached teacher, TensorBoard logger,
validation every epoch, the callbacks' settings of ``configs/base.yaml``). In each run the epochs cycle
through ``OBSERVER_CYCLE``: no observer callbacks, ``PerSampleStatistics`` collecting only (histograms and records
off), ``PerSampleStatistics`` alone, both callbacks, no observers again (the A/A control). The sides of each ratio
alternate epoch by epoch inside one run, so the drift of these machines from run to run (the same digits epoch takes
25-55 ms) cancels; whole runs per variant could not resolve a 3% bound under it. An epoch runs from its start to the
next epoch's start, so validation, the record file, the histograms' statistics and the module's epoch-end work count.
In an epoch where a callback is on, Lightning calls the callback's own hooks, its no-op ones included, as in a
run with it; where it is off, the callback has no hook at all, as in a run without it (``EpochGate``).
The module's and the callbacks' TensorBoard events wait in the module's ``PendingScalars`` until the end of
training, as in a real run; that hand-off (and the writer thread's work, up to its ``flush``) is timed one side
at a time, as a real run hands over all it holds at once (up to 10 s of training), and each epoch is charged its
side's share, on both sides of each ratio.

- ``per_sample.collection``: PerSampleStatistics with ``histograms=False, records=False`` on / off: what collecting,
  gathering and deduplicating the values costs before anything is written. Reported.
- ``per_sample.statistics``: PerSampleStatistics on / off. Reported.
- ``per_sample.both``: both callbacks on / off. Bound 1.03.
- ``per_sample.noise_floor``: the A/A control.
- ``per_sample.both_fashion_mnist``: both callbacks on / off on a Fashion-MNIST epoch (the shipped
  ``fashion_mnist_cnn`` teacher, cached, into ``mlp_small``; 55,000 images, batch 128, 430 steps, validation on
  5,000, the data layer's logging cadence). Reported: what the observers cost on an epoch of a real size, where the
  per-epoch work (the record file, the epoch histograms) is spread over 20x the steps of a digits epoch.
"""

from __future__ import annotations

import bisect
import math
import tempfile
import warnings
from collections.abc import Callable

import lightning as L
import torch
import yaml
from lightning.pytorch.loggers import TensorBoardLogger

from benchmarks.framework_overhead import UnitTimer
from benchmarks.harness import Budget, Clock, Measurement, budget, comparison, device, peak_memory_mb, reset_peak_memory
from callbacks import PerSampleStatistics, TemperatureMonitor
from distill.callback_hooks import CALLED_DIRECTLY, HOOKS
from distill.data import DigitsDataModule, FashionMNISTDataModule
from distill.layers import CONFIGS
from distill.module import DistillationModule
from distill.pending_scalars import WRITER_QUEUE

# The epochs of one run, cycled.
OBSERVER_CYCLE = ("no observers", "collection", "statistics", "both", "no observers again")


def layered_setting(data: str, section: str, key: str, default: int) -> int:
    """``section.key`` as the config layers of a ``data`` run set it (``base.yaml``, then ``data/<data>.yaml``); a
    callback's ``section`` reads its ``init_args``."""
    value = default
    for layer in ("base.yaml", f"data/{data}.yaml"):
        settings = (yaml.safe_load((CONFIGS / layer).read_text()) or {}).get(section) or {}
        value = (settings.get("init_args", settings) or {}).get(key, value)
    return int(value)


def every_n_steps(data: str = "digits") -> int:
    """``PerSampleStatistics.every_n_steps`` as the config layers of a ``data`` run set it."""
    return layered_setting(data, "per_sample_statistics", "every_n_steps", 50)


def log_every_n_steps(data: str) -> int:
    """``trainer.log_every_n_steps`` as the config layers of a ``data`` run set it (Lightning's default: 50)."""
    return layered_setting(data, "trainer", "log_every_n_steps", 50)


def side(epoch: int) -> str:
    """The side of ``OBSERVER_CYCLE`` that ``epoch`` times."""
    return OBSERVER_CYCLE[epoch % len(OBSERVER_CYCLE)]


class ChargedHandOff(DistillationModule):
    """``DistillationModule`` that, at the end of training, hands its held events to TensorBoard on the clock one side
    of ``OBSERVER_CYCLE`` at a time: a real run hands over everything held (up to 10 s of training) in one go, the
    events of one step as one TensorBoard event, its statistics worked out together. ``charges[epoch]`` is the seconds
    spent on the events of the epoch's side (its own training scalars and the observers' events alike) over that
    side's epochs, the final ``flush`` (the writer thread's work on all of them) shared out in proportion
    (``charges``)."""

    def __init__(self, clock: Clock, **module_args):
        super().__init__(**module_args)
        self.clock = clock
        # Held to the end of training: a hand-off after 10 s (a Fashion-MNIST run of 12 epochs takes 17 s) would land
        # inside one timed epoch, every side's events charged to that epoch's side.
        self.pending_scalars.max_delay_s = math.inf
        self.first_steps: list[int] = []  # first_steps[epoch]: the global step of the epoch's first batch
        self.charges: dict[int, float] = {}

    def on_train_epoch_start(self) -> None:
        self.first_steps.append(self.global_step)
        super().on_train_epoch_start()

    def on_train_end(self) -> None:
        pending, loggers = self.pending_scalars, self._trainer.loggers
        by_side: dict[str, list] = {}
        for event in pending.events:  # an event's step is the step of a batch of its epoch
            by_side.setdefault(side(bisect.bisect_right(self.first_steps, event[2]) - 1), []).append(event)
        spent = {}  # side -> seconds its events' hand-off took, all of its epochs together
        for name, events in by_side.items():
            start = self.clock()
            pending.events = events
            pending.write(loggers)
            spent[name] = self.clock() - start
        start = self.clock()
        for logger in loggers:
            logger.experiment.flush()
        self.charges = charges(spent, self.clock() - start, [side(epoch) for epoch in range(len(self.first_steps))])
        super().on_train_end()


def charges(spent: dict[str, float], flush: float, sides: list[str]) -> dict[int, float]:
    """Each epoch's share of the hand-off: ``spent[side]`` (the seconds the hand-off of that side's events took, all
    of its epochs together) split evenly over the side's epochs (``sides[epoch]``), plus the final ``flush`` (the
    writer thread's work on every side's events) shared out in proportion to ``spent``. The charges add up to
    ``sum(spent.values()) + flush``."""
    total = sum(spent.values())
    share = 1 + flush / total if total else 1.0
    return {epoch: spent.get(name, 0.0) * share / sides.count(name) for epoch, name in enumerate(sides)}


# The hooks Lightning calls in a training epoch (its train and validation batches and epochs), apart from
# ``on_train_epoch_start``, where ``EpochGate`` decides; and every other hook a callback has (run-level ones).
EPOCH_HOOKS = tuple(
    name for name in HOOKS
    if name.startswith(("on_train_", "on_validation_", "on_before_", "on_after_"))
    and name not in ("on_train_start", "on_train_end", "on_train_epoch_start")
)  # fmt: skip
RUN_HOOKS = tuple(
    name for name in (*HOOKS, *sorted(CALLED_DIRECTLY)) if name not in (*EPOCH_HOOKS, "on_train_epoch_start")
)


class EpochGate(L.Callback):
    """A callback's training-epoch hooks only in the epochs where ``active(epoch)``; its run-level hooks (setup, fit
    and train start and end, teardown, checkpoints) always, as in a run where it is on throughout.

    Lightning calls every hook of every callback, overridden or not (``Callback``'s no-ops cost about 1 us a call
    in a digits run, measured), and skips an attribute that is not callable. So at each epoch start the gate sets
    its epoch hooks (``EPOCH_HOOKS``) as instance attributes: the wrapped callback's own bound methods in its
    epochs, ``None`` in the others. An epoch where the callback is on then costs what a run with the callback
    costs, no-op hooks included, with no forwarding layer; an epoch where it is off costs what a run without it
    costs, apart from this one ``on_train_epoch_start`` call.

    ``name`` makes the gate's ``state_key`` (``EpochGate[<name>]``, by default the callback's own) unique when two
    gates wrap callbacks of one class: Lightning refuses two stateful callbacks with the same key.
    """

    def __init__(self, callback: L.Callback, active: Callable[[int], bool], name: str = ""):
        self.callback, self.active, self.name = callback, active, name or callback.state_key
        for hook in RUN_HOOKS:
            setattr(self, hook, getattr(callback, hook))
        self._open(False)

    @property
    def state_key(self) -> str:
        return f"EpochGate[{self.name}]"

    def _open(self, on: bool) -> None:
        for name in EPOCH_HOOKS:
            setattr(self, name, getattr(self.callback, name) if on else None)

    def on_train_epoch_start(self, trainer, pl_module):
        on = self.active(trainer.current_epoch)
        self._open(on)
        hook = self.callback.on_train_epoch_start
        if on and callable(hook):  # None where the callback leaves it out (distill.callback_hooks)
            hook(trainer, pl_module)


def observer_cycle(plan: Budget, data: str, make_data: Callable[[], L.LightningDataModule], module_args: dict,
                   on: torch.device) -> Measurement:  # fmt: skip
    """``plan.repeats`` Trainer runs of ``plan.warmup + plan.timed`` epochs cycling ``OBSERVER_CYCLE``: per side, per
    run, the epochs' seconds (each charged its side's share of the hand-off) and the peak memory."""
    clock = Clock(on)
    timed = max(plan.timed, len(OBSERVER_CYCLE))  # every side timed at least once (tiny mode)
    root = tempfile.mkdtemp(prefix=f"bench-observers-{data}-")
    every = every_n_steps(data)
    measurement = Measurement({name: [] for name in OBSERVER_CYCLE}, {name: [] for name in OBSERVER_CYCLE})
    for repeat in range(plan.repeats):
        L.seed_everything(0, verbose=False)
        reset_peak_memory(on)
        timer = UnitTimer(clock, plan.warmup)
        observers = [
            EpochGate(PerSampleStatistics(every_n_steps=every, histograms=False, records=False),
                      lambda epoch: side(epoch) == "collection", name="collection"),
            EpochGate(PerSampleStatistics(every_n_steps=every), lambda epoch: side(epoch) in ("statistics", "both")),
            EpochGate(TemperatureMonitor(), lambda epoch: side(epoch) == "both"),
        ]  # fmt: skip
        trainer = L.Trainer(
            accelerator="auto", devices=1, max_epochs=plan.warmup + timed, log_every_n_steps=log_every_n_steps(data),
            num_sanity_val_steps=0,
            logger=TensorBoardLogger(root, name=f"run{repeat}", default_hp_metric=False, max_queue=WRITER_QUEUE),
            callbacks=[*observers, timer], enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False,
        )  # fmt: skip
        module = ChargedHandOff(clock, **module_args)
        trainer.fit(module, make_data())
        for name in OBSERVER_CYCLE:
            # unit k is epoch warmup + k, charged its events' hand-off
            units = [t + module.charges.get(plan.warmup + k, 0.0)
                     for k, t in enumerate(timer.units) if side(plan.warmup + k) == name]  # fmt: skip
            measurement.units[name].append(units or [0.0])
            measurement.memory_mb[name].append(peak_memory_mb(on))
    return measurement


DESIGN = ("one Trainer run per repeat, epochs cycling " + " / ".join(OBSERVER_CYCLE) + "; every TensorBoard event "
          "(the module's and the observers') handed over at the end of training, one side at a time (as a run hands "
          "over all it holds at once), each epoch charged its side's share; an observer that is off in an epoch has "
          "no hook there, one that is on has all of its own (EpochGate)")  # fmt: skip


def run(mode: str) -> list:
    warnings.filterwarnings("ignore")
    on = device()
    # 5 x 9 timed epochs a run (one per side of OBSERVER_CYCLE each), 12 runs (30-70 s in all on these CPUs): with 8
    # the same code read 1.027-1.043 from one bench run to the next.
    plan = budget(mode, Budget(repeats=12, warmup=5, timed=45))
    digits = observer_cycle(plan, "digits", lambda: DigitsDataModule(batch_size=64), {}, on)
    setup = {"data": "digits, batch 64, 21 steps an epoch, validation every epoch", "every_n_steps": every_n_steps(),
             "log_every_n_steps": log_every_n_steps("digits"), "unit": "epoch", "design": DESIGN}  # fmt: skip
    # 5 x 6 timed epochs of 430 steps a run, 3 runs (2-3 min on these CPUs, a 14 s cache fill a run); with 4 x 3
    # epochs the A/A control read 0.974-1.027 from one bench run to the next, with 2 x 2 0.981-1.013. Tiny mode: 20
    # images a class.
    fashion_plan = budget(mode, Budget(repeats=3, warmup=5, timed=30))
    per_class = 20 if mode == "tiny" else None
    fashion = observer_cycle(
        fashion_plan, "fashion_mnist",
        lambda: FashionMNISTDataModule(batch_size=128, val_size=5000 if per_class is None else 20, train_per_class=per_class),
        {"student": "mlp_small", "teacher": "fashion_mnist_cnn", "teacher_cache": True, "num_classes": 10,
         "input_shape": (1, 28, 28)}, on,
    )  # fmt: skip
    fashion_setup = {"data": "Fashion-MNIST, shipped fashion_mnist_cnn teacher (cached) -> mlp_small, TALS, batch 128, "
                     + ("430 steps an epoch" if per_class is None else f"{per_class} images a class")
                     + ", validation every epoch", "every_n_steps": every_n_steps("fashion_mnist"),
                     "log_every_n_steps": log_every_n_steps("fashion_mnist"), "unit": "epoch", "design": DESIGN}  # fmt: skip
    return [
        comparison("per_sample.collection", "PerSampleStatistics collecting only (histograms and records off) vs off, "
                   "digits epoch", digits, "collection", "no observers", on, setup=setup),
        comparison("per_sample.statistics", "PerSampleStatistics on vs off, digits epoch", digits,
                   "statistics", "no observers", on, setup=setup),
        comparison("per_sample.both", "PerSampleStatistics and TemperatureMonitor on vs off, digits epoch",
                   digits, "both", "no observers", on, bound=1.03, setup=setup),
        comparison("per_sample.noise_floor", "A/A control: no observers in two epochs of the same cycle",
                   digits, "no observers again", "no observers", on, setup=setup),
        comparison("per_sample.collection_fashion_mnist",
                   "PerSampleStatistics collecting only (histograms and records off) vs off, Fashion-MNIST epoch",
                   fashion, "collection", "no observers", on, setup=fashion_setup),
        comparison("per_sample.both_fashion_mnist",
                   "PerSampleStatistics and TemperatureMonitor on vs off, Fashion-MNIST epoch", fashion,
                   "both", "no observers", on, setup=fashion_setup),
        comparison("per_sample.noise_floor_fashion_mnist", "A/A control on the Fashion-MNIST epochs", fashion,
                   "no observers again", "no observers", on, setup=fashion_setup),
    ]  # fmt: skip
