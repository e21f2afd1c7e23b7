"""What a Block-KD training step costs against a plain KD step.

    python -m benchmarks.run --only blockkd       (part of ``make bench``)

For each case the same student (same initial weights), the same frozen teacher and the same random batch go
through ``DistillationModule.training_loss`` + backward + SGD step in three variants:

- ``kd``: the plain frame (Hinton KD, T = 4);
- ``blockkd``: ``BlockwiseDistillation()`` with its defaults (stones of the same teacher stage batched);
- ``blockkd unbatched``: the same with ``batch_stones=False`` (each stone runs its own teacher stages).

Cases: resnet32x4 -> resnet8x4 at batch 64 on CIFAR shapes (3x32x32, 100 classes; random teacher weights and
images: the cost does not depend on them), its teacher's forward in every step as on augmented data; the digits
pairs (the shipped ``digits_cnn`` teacher into cnn_small and mlp_small, batch 64, 8x8), the teacher's logits read
from a cache as digits runs do.

The variants run interleaved in a rotating order (``benchmarks.harness``) after one warm-up step each; reported:
each Block-KD variant's median ratio to the KD step of the same repeat, and the forward + backward FLOPs of one
step (``torch.utils.flop_counter``: convolutions and matrix products) as a ratio, the cost model's expectation
(about 2.2x for resnet32x4 -> resnet8x4). Timings, not assertions.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import Budget, Clock, Figure, Variant, budget, comparison, device, interleave
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
    key: str
    name: str
    teacher: str  # a teacher registry name, or a zoo architecture to save with random weights
    student: str
    input_shape: tuple[int, int, int]
    num_classes: int
    batch_size: int
    steps: int  # steps per timed unit
    cached_teacher: bool  # teacher logits read from a cache (digits runs) instead of a teacher forward


CASES = [
    Case("resnet32x4", "resnet32x4 -> resnet8x4", "resnet32x4", "resnet8x4", (3, 32, 32), 100, 64, 1, False),
    Case("digits_cnn_small", "digits_cnn -> cnn_small", "digits_cnn", "cnn_small", (1, 8, 8), 10, 64, 20, True),
    Case("digits_mlp_small", "digits_cnn -> mlp_small", "digits_cnn", "mlp_small", (1, 8, 8), 10, 64, 20, True),
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


def run_case(case: Case, plan: Budget, folder: Path) -> list[Figure]:
    """The case's three variants interleaved; a ratio figure per Block-KD variant, with FLOP ratios."""
    on = device()
    teacher = teacher_source(case, folder)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(case.batch_size, *case.input_shape, generator=generator)
    labels = torch.randint(0, case.num_classes, (case.batch_size,), generator=generator)
    built = {name: build(case, teacher, method) for name, method in VARIANTS.items()}
    cached = built["kd"][0].teacher_logits(images) if case.cached_teacher else None
    flops = {name: step_flops(*built[name], images, labels, cached) for name in VARIANTS}  # also the warm-up
    clock = Clock(on)

    def timed(name: str) -> list[float]:
        units = []
        for _ in range(plan.timed):
            start = clock()
            for _ in range(case.steps):
                step(*built[name], images, labels, cached)
            units.append((clock() - start) / case.steps)
        return units

    measurement = interleave([Variant(name, lambda name=name: timed(name)) for name in VARIANTS], plan.repeats, on)
    stones = built["blockkd"][0].method.stones.num_stones
    setup = {"pair": case.name, "batch": case.batch_size, "stones": stones, "steps_per_unit": case.steps,
             "teacher_logits": "cached" if case.cached_teacher else "teacher forward"}  # fmt: skip
    return [
        comparison(f"blockkd.{case.key}.{name.replace(' ', '_')}", f"{name} step vs a plain KD step, {case.name}",
                   measurement, name, "kd", on,
                   setup={**setup, "flops_ratio": round(flops[name] / flops["kd"], 3)},
                   note="expected about 2.2x from the stones' extra forward and backward passes"
                   if case.key == "resnet32x4" else "tiny model: per-call overhead dominates")
        for name in VARIANTS if name != "kd"
    ]  # fmt: skip


def run(mode: str) -> list[Figure]:
    """``make bench``'s entry: every case (tiny mode: the digits cases, one repeat)."""
    warnings.filterwarnings("ignore")
    plan = budget(mode, Budget(repeats=3, warmup=0, timed=1), Budget(repeats=5, warmup=0, timed=3))
    cases = CASES if mode != "tiny" else [replace(case, steps=1) for case in CASES if case.cached_teacher]
    with tempfile.TemporaryDirectory() as folder:
        return [figure for case in cases for figure in run_case(case, plan, Path(folder))]
