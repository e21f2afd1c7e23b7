"""What ``PerSampleStatistics`` and ``TemperatureMonitor`` add to a training epoch.

    python benchmarks/per_sample_overhead.py [--epochs 8] [--repeats 8] [--every-n-steps N]

Trains the default digits setup (shipped teacher -> mlp_small, TALS, TensorBoard logger, validation
every epoch, ``every_n_steps`` and ``log_every_n_steps`` as in ``configs/data/digits.yaml``) once per
variant and repeat, the variants interleaved in a rotating order so that load on the machine hits
them alike:

- ``baseline`` and ``baseline again``: no observer callbacks (the second one is an A/A control: its
  ratio to the first is the noise floor of this machine, right now);
- ``stats``: ``PerSampleStatistics``;
- ``stats+monitor``: both callbacks, as ``configs/data/digits.yaml`` runs them.

An epoch is timed from ``on_train_epoch_start`` to the end of ``on_train_epoch_end`` (validation, the
record file and the epoch histograms included); the first epoch of every fit is warm-up and dropped.
Reported, per variant: the median epoch time on two clocks, process CPU time (the headline on a
shared machine; one torch thread by default so that idle OpenMP threads do not spin it up) and wall
time, each as a ratio to the baselines of the same repeat (median over repeats; the budget is 1.03);
and the time spent inside the callbacks' own hooks per epoch (main thread, wall clock), which is far
less noisy than a difference of two epoch times but misses the TensorBoard writer thread (its pure-
Python CRC of the events). Timings, not assertions: nothing here fails on a slow machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.loggers import TensorBoardLogger

from callbacks import PerSampleStatistics, TemperatureMonitor
from distill.data import DigitsDataModule
from distill.module import DistillationModule

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "data" / "digits.yaml"
VARIANTS = ("baseline", "baseline again", "stats", "stats+monitor")
HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_train_epoch_end")


class EpochTimer(L.Callback):
    """Wall and process CPU time of every training epoch, and the observers' in-hook time during it
    (keep it last in the callback list, so that the epoch-end hooks it times have run).

    Args:
        spent: one-element list the observers' timed hooks add their seconds to.
    """

    def __init__(self, spent: list[float]):
        self.spent = spent
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.hooks: list[float] = []
        self._start = (0.0, 0.0, 0.0)

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = (time.perf_counter(), time.process_time(), self.spent[0])

    def on_train_epoch_end(self, trainer, pl_module):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])
        self.hooks.append(self.spent[0] - self._start[2])


def timed_hooks(callback: L.Callback, spent: list[float]) -> L.Callback:
    """Wrap the callback's per-step and epoch-end hooks so their wall time adds up in ``spent[0]``."""
    for name in HOOKS:
        hook = getattr(callback, name)

        def timed(*args, _hook=hook, **kwargs):
            start = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        setattr(callback, name, timed)
    return callback


def observers(variant: str, every_n_steps: int, spent: list[float]) -> list[L.Callback]:
    chosen: list[L.Callback] = []
    if variant.startswith("stats"):
        chosen.append(PerSampleStatistics(every_n_steps=every_n_steps))
    if variant == "stats+monitor":
        chosen.append(TemperatureMonitor())
    return [timed_hooks(callback, spent) for callback in chosen]


def one_fit(variant: str, epochs: int, every_n_steps: int, log_every_n_steps: int, root: str) -> dict[str, list[float]]:
    """Per-epoch wall, CPU and in-hook seconds of one fit, warm-up epoch dropped."""
    L.seed_everything(0, verbose=False)
    spent = [0.0]
    timer = EpochTimer(spent)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        log_every_n_steps=log_every_n_steps,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(root, name=variant.replace(" ", "_"), default_hp_metric=False),
        callbacks=[*observers(variant, every_n_steps, spent), timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(DistillationModule(), DigitsDataModule(batch_size=64))
    return {"wall": timer.wall[1:], "cpu": timer.cpu[1:], "hooks": timer.hooks[1:]}


def config_defaults() -> tuple[int, int]:
    """``every_n_steps`` and ``log_every_n_steps`` of ``configs/data/digits.yaml``."""
    config = yaml.safe_load(CONFIG.read_text())
    every = ((config.get("per_sample_statistics") or {}).get("init_args") or {}).get("every_n_steps", 50)
    return int(every), int(config["trainer"].get("log_every_n_steps", 50))


def main() -> None:
    every_default, log_every = config_defaults()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--every-n-steps", type=int, default=every_default)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    fits: dict[str, list[dict[str, list[float]]]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(args.repeats):
            order = VARIANTS[repeat % len(VARIANTS) :] + VARIANTS[: repeat % len(VARIANTS)]
            for variant in order:
                fits[variant].append(one_fit(variant, args.epochs, args.every_n_steps, log_every, root))

    results = summarize(fits)
    print(f"per-sample statistics overhead: digits, {args.repeats} repeats x {args.epochs - 1} timed epochs, "
          f"every_n_steps={args.every_n_steps}, log_every_n_steps={log_every}, "
          f"{args.threads} torch thread(s)")  # fmt: skip
    print("  ratio: median over repeats of (variant / mean of the two baselines of the same repeat)")
    header = ("variant", "cpu ms", "ratio", "wall ms", "ratio", "in hooks", "share")
    print("  {:15s} {:>8s} {:>6s} {:>8s} {:>6s} {:>9s} {:>6s}".format(*header))
    for variant, r in results.items():
        print(f"  {variant:15s} {r['median_cpu_ms']:8.1f} {r['cpu_ratio']:6.3f} {r['median_wall_ms']:8.1f} "
              f"{r['wall_ratio']:6.3f} {r['hooks_ms_per_epoch']:7.2f}ms {100 * r['hooks_share']:5.2f}%")  # fmt: skip
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"args": vars(args), "log_every_n_steps": log_every, "results": results}, stream, indent=2)


def summarize(fits: dict[str, list[dict[str, list[float]]]]) -> dict[str, dict[str, float]]:
    """Per variant: median epoch times over every timed epoch, paired ratios and in-hook time.

    A ratio pairs each repeat's fits (run back to back, so they share the machine's load of the moment):
    the variant's median epoch over the mean of the two baselines' medians in that repeat; the median of
    those over repeats is reported. ``hooks_share`` is the in-hook time over the baseline's median
    wall-clock epoch.
    """
    median = statistics.median
    baseline_wall = median([t for fit in fits["baseline"] for t in fit["wall"]])
    results = {}
    for variant, runs in fits.items():
        result: dict[str, float] = {"epochs_timed": sum(len(fit["wall"]) for fit in runs)}
        for clock in ("cpu", "wall"):
            result[f"median_{clock}_ms"] = 1000 * median([t for fit in runs for t in fit[clock]])
            paired = [
                median(fit[clock]) / ((median(first[clock]) + median(second[clock])) / 2)
                for fit, first, second in zip(runs, fits["baseline"], fits["baseline again"])
            ]
            result[f"{clock}_ratio"] = median(paired)
        result["hooks_ms_per_epoch"] = 1000 * median([t for fit in runs for t in fit["hooks"]])
        result["hooks_share"] = result["hooks_ms_per_epoch"] / (1000 * baseline_wall)
        results[variant] = result
    return results


if __name__ == "__main__":
    main()
