"""What a Block-KD training step costs against a plain KD step.

    python benchmarks/blockwise_step.py [--quick] [--repeats 5] [--threads 1]

For each case the same student (same initial weights), the same frozen teacher and the same random batch go
through ``DistillationModule.training_loss`` + backward + SGD step in three variants:

- ``kd``: the plain frame (Hinton KD, T = 4);
- ``blockkd``: ``BlockwiseDistillation()`` with its defaults (stones of the same teacher stage batched);
- ``blockkd unbatched``: the same with ``batch_stones=False`` (each stone runs its own teacher stages).

Cases: resnet32x4 -> resnet8x4 at batch 64 on CIFAR shapes (3x32x32, 100 classes; random teacher weights and
images: the cost does not depend on them), its teacher's forward in every step as on augmented data; the digits
pairs (the shipped ``digits_cnn`` teacher into cnn_small and mlp_small, batch 64, 8x8), the teacher's logits read
from a cache as digits runs do.

The variants run interleaved in a rotating order, ``steps`` steps each per repeat after one warm-up step;
reported: the median process CPU time per step (one torch thread by default, so that the clock is not inflated by
spinning OpenMP threads), each Block-KD variant's median ratio to the KD step of the same repeat, and the
forward + backward FLOPs of one step (``torch.utils.flop_counter``: convolutions and matrix products) with their
ratio, the cost model's expectation (about 2.2x for resnet32x4 -> resnet8x4). Timings, not assertions.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from distill.methods import BlockwiseDistillation
from distill.models import create
from distill.module import DistillationModule
from distill.policies import FixedTemperature
from teachers.checkpoint import save_teacher_checkpoint

VARIANTS = {
    "kd": None,
    "blockkd": dict(batch_stones=True),
    "blockkd unbatched": dict(batch_stones=False),
}


@dataclass(frozen=True)
class Case:
    name: str
    teacher: str  # a teacher registry name, or a zoo architecture to save with random weights
    student: str
    input_shape: tuple[int, int, int]
    num_classes: int
    batch_size: int
    steps: int  # timed steps per variant and repeat
    cached_teacher: bool  # teacher logits read from a cache (digits runs) instead of a teacher forward


CASES = [
    Case("resnet32x4 -> resnet8x4", "resnet32x4", "resnet8x4", (3, 32, 32), 100, 64, 2, cached_teacher=False),
    Case("digits_cnn -> cnn_small", "digits_cnn", "cnn_small", (1, 8, 8), 10, 64, 40, cached_teacher=True),
    Case("digits_cnn -> mlp_small", "digits_cnn", "mlp_small", (1, 8, 8), 10, 64, 40, cached_teacher=True),
]


def teacher_source(case: Case, folder: Path) -> str:
    """The registry name, or a checkpoint of the architecture with random weights written into ``folder``."""
    if case.teacher.startswith("digits"):
        return case.teacher
    path = folder / f"{case.teacher}.pt"
    torch.manual_seed(1)
    model = create(case.teacher, case.num_classes, case.input_shape)
    save_teacher_checkpoint(path, model, case.teacher, case.num_classes, case.input_shape, "random", 0.0)
    return str(path)


def build(case: Case, teacher: str, method: dict | None) -> tuple[DistillationModule, torch.optim.Optimizer]:
    torch.manual_seed(0)  # the same student (and connectors' seed) in every variant
    module = DistillationModule(
        student=case.student,
        teacher=teacher,
        temperature_policy=FixedTemperature(T=4.0, ce_weight=0.1, kd_weight=0.9),
        num_classes=case.num_classes,
        input_shape=case.input_shape,
        method=BlockwiseDistillation(**method) if method is not None else None,
    ).train()
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    return module, optimizer


def step(module: DistillationModule, optimizer, images, labels, cached_logits) -> None:
    """One training step as the module takes it (teacher logits, loss, backward, optimizer step)."""
    teacher_logits = cached_logits if cached_logits is not None else module.teacher_logits(images)
    optimizer.zero_grad(set_to_none=True)
    module.training_loss(images, labels, teacher_logits).loss.backward()
    optimizer.step()


def step_flops(module, optimizer, images, labels, cached_logits) -> int:
    with FlopCounterMode(display=False) as counter:
        step(module, optimizer, images, labels, cached_logits)
    return counter.get_total_flops()


def run_case(case: Case, repeats: int, steps: int | None, folder: Path) -> None:
    teacher = teacher_source(case, folder)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(case.batch_size, *case.input_shape, generator=generator)
    labels = torch.randint(0, case.num_classes, (case.batch_size,), generator=generator)
    built = {name: build(case, teacher, method) for name, method in VARIANTS.items()}
    cached = built["kd"][0].teacher_logits(images) if case.cached_teacher else None
    flops = {name: step_flops(*built[name], images, labels, cached) for name in VARIANTS}  # also the warm-up
    steps = steps or case.steps
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    ratios: dict[str, list[float]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        this_repeat = {}
        for name in order:
            start = time.process_time()
            for _ in range(steps):
                step(*built[name], images, labels, cached)
            this_repeat[name] = (time.process_time() - start) / steps
            times[name].append(this_repeat[name])
        for name in names:
            ratios[name].append(this_repeat[name] / this_repeat["kd"])
    stones = built["blockkd"][0].method.stones.num_stones
    source = "cached" if case.cached_teacher else "teacher forward"
    print(f"\n{case.name}, batch {case.batch_size}, {stones} stones, teacher logits: {source}, "
          f"{repeats} repeats x {steps} steps")  # fmt: skip
    print(f"  {'variant':<20} {'CPU ms/step':>12} {'x KD (median)':>14} {'GFLOP/step':>11} {'x KD FLOPs':>11}")
    for name in names:
        print(
            f"  {name:<20} {1000 * statistics.median(times[name]):12.2f} {statistics.median(ratios[name]):13.2f}x "
            f"{flops[name] / 1e9:11.3f} {flops[name] / flops['kd']:10.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats of 1 step (CIFAR) / 10 steps (digits)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU time is summed over them)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module` and is already saved.*")
    repeats = 2 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as folder:
        for case in CASES:
            steps = (10 if case.cached_teacher else 1) if args.quick else None
            run_case(case, repeats, steps, Path(folder))


if __name__ == "__main__":
    main()
