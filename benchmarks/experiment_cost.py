"""Estimated GPU hours of the published experiments (``distill.experiments``), from counted FLOPs.

    python -m benchmarks.experiment_cost [--fraction 0.1] [--peak 989e12]

An estimate, not a measurement (no GPU was available to time a step). Per training step: the teacher's forward
(no gradient) plus the student's forward and backward, counted by ``torch.utils.flop_counter`` on one batch of
each pair (64 CIFAR images, 512 ImageNet images) under ``FakeTensorMode``, so nothing is computed and the count is
that of the real operators (convolutions and matrix products; normalisation, activations and the loss are left
out, a few percent). SAM runs the student's forward-backward twice per step and reuses the teacher's logits.
Steps: CIFAR-100 240 epochs x 782 steps (50,000 images at batch 64, as the papers train; the default held-out split
of 5,000 makes it 704), ImageNet 100 epochs x 2,503 steps (1,281,167 images at batch 512). Hours = FLOPs x steps /
(fraction x peak) / 3600, with an H100's dense bf16 peak (989 TFLOP/s) and an assumed fraction of it.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch
import yaml
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from distill.experiments import EXPERIMENTS, Experiment
from distill.layers import CONFIGS
from distill.models import create
from teachers import TEACHERS

H100_BF16_DENSE_PEAK = 989e12  # FLOP/s, NVIDIA's H100 SXM figure without sparsity
# Small convolutions at 32x32 with batch 64 keep a large GPU far from its peak; 10% is an assumption, not a measurement.
ASSUMED_FRACTION = 0.10
DATA = {  # data layer: (classes, image shape, batch per step, steps of the whole schedule)
    "cifar100": (100, (3, 32, 32), 64, 240 * math.ceil(50_000 / 64)),
    "imagenet": (1000, (3, 224, 224), 512, 100 * math.ceil(1_281_167 / 512)),
}


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step's networks (the whole batch)."""

    teacher_forward: int
    student_forward_backward: int
    batch: int

    def total(self, sam: bool = False) -> int:
        """The step's FLOPs; SAM computes the student's forward-backward twice."""
        return self.teacher_forward + (2 if sam else 1) * self.student_forward_backward


def count_step_flops(teacher: str | None, student: str, num_classes: int, input_shape: tuple[int, int, int],
                     batch: int) -> StepFlops:  # fmt: skip
    """Count one step's FLOPs for ``distill.models`` names ``teacher`` (``None``: cross-entropy only) and ``student``
    on a ``[batch, *input_shape]`` batch, under ``FakeTensorMode`` (shapes only: nothing is computed)."""
    with FakeTensorMode():
        images = torch.empty(batch, *input_shape)
        teacher_flops = 0
        if teacher is not None:
            teacher_model = create(teacher, num_classes=num_classes, input_shape=input_shape).eval()
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                teacher_model(images)
            teacher_flops = counter.get_total_flops()
        student_model = create(student, num_classes=num_classes, input_shape=input_shape).train()
        with FlopCounterMode(display=False) as counter:
            student_model(images).float().sum().backward()
        student_flops = counter.get_total_flops()
    return StepFlops(teacher_flops, student_flops, batch)


def gpu_hours(flops: float, fraction: float = ASSUMED_FRACTION, peak: float = H100_BF16_DENSE_PEAK) -> float:
    """Hours to compute ``flops`` at ``fraction`` of ``peak`` FLOP/s."""
    return flops / (fraction * peak) / 3600.0


def pair_architectures(pair: str) -> tuple[str, str]:
    """``(teacher architecture, student architecture)`` of ``configs/pairs/<pair>.yaml``."""
    model = yaml.safe_load((CONFIGS / "pairs" / f"{pair}.yaml").read_text())["model"]
    return TEACHERS[model["teacher"]].architecture, model["student"]


def runs_of(experiment: Experiment) -> int:
    """How many training runs the experiment is: a grid's values, else one."""
    if not experiment.is_sweep:
        return 1
    policy = yaml.safe_load((CONFIGS / "methods" / f"{experiment.method}.yaml").read_text())["model"]
    return len(policy["temperature_policy"]["init_args"]["values"])


@dataclass(frozen=True)
class ExperimentCost:
    """An experiment's estimated cost (all its runs, one seed)."""

    experiment: Experiment
    step: StepFlops
    sam: bool
    steps: int
    runs: int

    @property
    def flops(self) -> float:
        return float(self.step.total(self.sam)) * self.steps * self.runs

    def hours(self, fraction: float = ASSUMED_FRACTION, peak: float = H100_BF16_DENSE_PEAK) -> float:
        return gpu_hours(self.flops, fraction, peak)


def experiment_costs(experiments: list[Experiment] = EXPERIMENTS) -> list[ExperimentCost]:
    """Every experiment's cost; each distinct pair is counted once."""
    counted: dict[tuple[str, str], StepFlops] = {}
    costs = []
    for experiment in experiments:
        num_classes, input_shape, batch, steps = DATA[experiment.data]
        key = (experiment.data, experiment.pair)
        if key not in counted:
            counted[key] = count_step_flops(*pair_architectures(experiment.pair), num_classes, input_shape, batch)
        sam = "optim/sam.yaml" in experiment.extra
        costs.append(ExperimentCost(experiment, counted[key], sam, steps, runs_of(experiment)))
    return costs


def markdown(costs: list[ExperimentCost], fraction: float, peak: float) -> str:
    """One row per distinct (data, pair, optimizer): FLOPs per image and step, and the hours of one run."""
    lines = [
        f"| data | pair | optimizer | teacher forward (GFLOP/image) | student fwd+bwd (GFLOP/image) | step (TFLOP) | "
        f"run (EFLOP) | GPU hours per run at {100 * fraction:g}% of {peak / 1e12:g} TFLOP/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    seen = set()
    for cost in costs:
        key = (cost.experiment.data, cost.experiment.pair, cost.sam)
        if key in seen:
            continue
        seen.add(key)
        step, per_run = cost.step, float(cost.step.total(cost.sam)) * cost.steps
        lines.append(
            f"| {cost.experiment.data} | {cost.experiment.pair} | {'SAM' if cost.sam else 'SGD'} | "
            f"{step.teacher_forward / step.batch / 1e9:.3f} | {step.student_forward_backward / step.batch / 1e9:.3f} | "
            f"{step.total(cost.sam) / 1e12:.3f} | {per_run / 1e18:.2f} | {gpu_hours(per_run, fraction, peak):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fraction", type=float, default=ASSUMED_FRACTION, help="assumed share of the peak")
    parser.add_argument("--peak", type=float, default=H100_BF16_DENSE_PEAK, help="peak FLOP/s")
    args = parser.parse_args(argv)
    costs = experiment_costs()
    print(markdown(costs, args.fraction, args.peak))
    num_classes, input_shape, batch, steps = DATA["cifar100"]
    teacher = count_step_flops(None, TEACHERS["ResNet34_cifar100"].architecture, num_classes, input_shape, batch)
    hours = gpu_hours(float(teacher.total()) * steps, args.fraction, args.peak)
    print(f"\nteacher ResNet34_cifar100 (cross-entropy, SGD): {teacher.total() / batch / 1e9:.3f} GFLOP/image, "
          f"{hours:.2f} GPU hours\n")
    for cost in costs:
        print(f"{cost.experiment.name}: {cost.runs} run(s), {cost.hours(args.fraction, args.peak):.2f} GPU hours")


if __name__ == "__main__":
    main()
