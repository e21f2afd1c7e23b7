"""The GPU path: images/s, peak memory and the projected wall time of a CIFAR-100 run.

resnet32x4 -> resnet8x4 Hinton KD at batch 64 through ``DistillationModule`` in a ``Trainer`` with
``bf16-mixed``, ``channels_last`` and, in full mode, ``torch.compile`` (timed after its warm-up), on
in-memory batches already on the device (the CIFAR loader is measured on its own,
``data.cifar_loader``). Reported:

- ``gpu.images_per_second``: training images per second (median step);
- ``gpu.projected_240_epochs``: 240 epochs of 782 steps at that step time, in hours;
- ``gpu.flop_floor_ratio``: the measured step time over the step's FLOP floor, the FLOPs of the
  teacher forward plus the student forward and backward (counted with ``torch.utils.flop_counter``)
  at the GPU's dense bf16 peak. 1.0 would be a step at the hardware's peak; small convolutions on
  32x32 images are far from it.

Without a GPU the same code runs on the CPU in ``tiny`` mode (fp32, small models) so that the path is
exercised; the figures then say ``cpu`` and the FLOP floor is not reported.
"""

from __future__ import annotations

import statistics
import tempfile
import warnings

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.framework_overhead import SameBatches, UnitTimer, cifar_batches, kd_module, quiet_trainer
from benchmarks.harness import Budget, Clock, Figure, budget, device, peak_memory_mb, reset_peak_memory

# Dense bf16 tensor-core peak, FLOP/s, by device name (vendor data sheets; SXM parts).
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
STEPS_PER_EPOCH = 782  # CIFAR-100: 50,000 images at batch 64
EPOCHS = 240


def bf16_peak(name: str) -> float | None:
    """The dense bf16 peak of a GPU named ``name`` (``None`` when unknown)."""
    return next((peak for key, peak in BF16_PEAK.items() if key in name), None)


def step_flops(student: torch.nn.Module, teacher: torch.nn.Module, images: torch.Tensor, labels) -> float:
    """FLOPs of one step's teacher forward and student forward and backward."""
    counter = FlopCounterMode(display=False)
    with counter:
        with torch.no_grad():
            teacher(images)
        F.cross_entropy(student(images), labels).backward()
    student.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def run(mode: str) -> list[Figure]:
    warnings.filterwarnings("ignore")
    on = device()
    if on.type != "cuda" and mode != "tiny":
        return [Figure("gpu.images_per_second", "GPU throughput", float("nan"), "images/s",
                       note="no GPU in this run: `make bench` on a GPU machine measures it")]  # fmt: skip
    plan = budget(mode, Budget(repeats=1, warmup=20, timed=100), Budget(repeats=1, warmup=30, timed=200))
    cuda = on.type == "cuda"
    student, teacher = ("resnet8x4", "resnet32x4") if cuda else ("resnet8", "resnet8")
    batch_size = 64 if cuda else 4
    compile_models = cuda and mode == "full"
    batches = cifar_batches(plan.warmup + plan.timed, batch_size, on)
    module = kd_module(student, teacher, on)
    module.channels_last = True
    for network in (module.student, module.teacher):
        network.to(memory_format=torch.channels_last)
        if compile_models:
            network.compile()
    flops = step_flops(module.student, module.teacher, *batches[0][:2])
    clock = Clock(on)
    timer = UnitTimer(clock, plan.warmup, per="step")
    reset_peak_memory(on)
    trainer = quiet_trainer(tempfile.mkdtemp(prefix="bench-gpu-"), [timer], max_epochs=1, log_every_n_steps=50,
                            precision="bf16-mixed" if cuda else "32-true")  # fmt: skip
    trainer.fit(module, train_dataloaders=SameBatches(batches))
    step = statistics.median(timer.units)
    memory = peak_memory_mb(on)
    setup = {"pair": f"{teacher} -> {student}", "batch": batch_size, "precision": "bf16-mixed" if cuda else "32-true",
             "channels_last": True, "compile": compile_models, "timed_steps": len(timer.units),
             "device": torch.cuda.get_device_name(on) if cuda else "cpu"}  # fmt: skip
    variants = {"step": {"median_ms": 1000 * step, "peak_memory_mb": memory}}
    figures = [
        Figure("gpu.images_per_second", "training images per second", batch_size / step, "images/s",
               variants=variants, setup=setup),
        Figure("gpu.projected_240_epochs", "projected wall time of 240 CIFAR-100 epochs (782 steps each)",
               EPOCHS * STEPS_PER_EPOCH * step / 3600, "hours", variants=variants, setup=setup,
               note="training steps only: validation and the loader are not included"),
    ]  # fmt: skip
    peak = bf16_peak(setup["device"]) if cuda else None
    if peak:
        figures.append(Figure("gpu.flop_floor_ratio", "step time over the FLOP floor at the GPU's bf16 peak",
                              step / (flops / peak), "x", variants=variants,
                              setup={**setup, "step_flops": flops, "bf16_peak_flops": peak}))  # fmt: skip
    return figures
