"""What ``PerSampleStatistics`` and ``TemperatureMonitor`` add to a training epoch.

    python benchmarks/per_sample_overhead.py [--epochs 8] [--repeats 8] [--every-n-steps N]

Trains the default digits setup (shipped teacher -> mlp_small, TALS, TensorBoard logger, validation
every epoch, ``every_n_steps`` and ``log_every_n_steps`` as in ``configs/default.yaml``) once per
variant and repeat, the variants interleaved in a rotating order so that load on the machine hits
them alike:

- ``baseline`` and ``baseline again``: no observer callbacks (the second one is an A/A control: its
  ratio to the first is the noise floor of this machine, right now);
- ``stats``: ``PerSampleStatistics``;
- ``stats+monitor``: both callbacks, as ``configs/default.yaml`` runs them.

An epoch is timed from ``on_train_epoch_start`` to the end of ``on_train_epoch_end`` (validation, the
record file and the epoch histograms included); the first epoch of every fit is warm-up and dropped.
Reported, per variant: the median epoch time on two clocks, process CPU time (the headline on a
shared machine; one torch thread by default so that idle OpenMP threads do not spin it up) and wall
time, each as a ratio to the baseline's median (the budget is 1.03); and the time spent inside the
callbacks' own hooks per epoch (main thread, wall clock), which is far less noisy than a difference of
two epoch times but misses the TensorBoard writer thread (CRC of the events). Timings, not assertions:
nothing here fails on a slow machine.
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

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
VARIANTS = ("baseline", "baseline again", "stats", "stats+monitor")
HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_train_epoch_end")


class EpochTimer(L.Callback):
    """Wall and process CPU time of every training epoch (keep it last in the callback list)."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._start = (0.0, 0.0)

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = (time.perf_counter(), time.process_time())

    def on_train_epoch_end(self, trainer, pl_module):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


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
    timer, spent = EpochTimer(), [0.0]
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
    return {"wall": timer.wall[1:], "cpu": timer.cpu[1:], "hooks": [spent[0] / epochs] * (epochs - 1)}


def config_defaults() -> tuple[int, int]:
    """``every_n_steps`` and ``log_every_n_steps`` of ``configs/default.yaml``."""
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

    times = {variant: {"wall": [], "cpu": [], "hooks": []} for variant in VARIANTS}
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(args.repeats):
            order = VARIANTS[repeat % len(VARIANTS) :] + VARIANTS[: repeat % len(VARIANTS)]
            for variant in order:
                for clock, values in one_fit(variant, args.epochs, args.every_n_steps, log_every, root).items():
                    times[variant][clock] += values

    results = {}
    for variant, measured in times.items():
        result = {
            "epochs_timed": len(measured["wall"]),
            "hooks_ms_per_epoch": 1000 * statistics.median(measured["hooks"]),
        }
        for clock in ("cpu", "wall"):
            median = statistics.median(measured[clock])
            result[f"median_{clock}_ms"] = 1000 * median
            result[f"{clock}_ratio"] = median / statistics.median(times["baseline"][clock])
        result["hooks_share"] = result["hooks_ms_per_epoch"] / results.get("baseline", result)["median_wall_ms"]
        results[variant] = result
    print(f"per-sample statistics overhead: digits, {args.repeats} repeats x {args.epochs - 1} timed epochs, "
          f"every_n_steps={args.every_n_steps}, log_every_n_steps={log_every}, "
          f"{args.threads} torch thread(s)")  # fmt: skip
    header = ("variant", "cpu ms", "ratio", "wall ms", "ratio", "in hooks", "share")
    print("  {:15s} {:>8s} {:>6s} {:>8s} {:>6s} {:>9s} {:>6s}".format(*header))
    for variant, r in results.items():
        print(f"  {variant:15s} {r['median_cpu_ms']:8.1f} {r['cpu_ratio']:6.3f} {r['median_wall_ms']:8.1f} "
              f"{r['wall_ratio']:6.3f} {r['hooks_ms_per_epoch']:7.2f}ms {100 * r['hooks_share']:5.2f}%")  # fmt: skip
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"args": vars(args), "log_every_n_steps": log_every, "results": results}, stream, indent=2)


if __name__ == "__main__":
    main()
