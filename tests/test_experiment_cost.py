"""The GPU-hour estimate of docs/experiments.md: counted FLOPs against a hand count, and its arithmetic."""

from __future__ import annotations

import pytest

from benchmarks.experiment_cost import (
    DATA, H100_BF16_DENSE_PEAK, count_step_flops, experiment_costs, gpu_hours, pair_architectures,
)  # fmt: skip
from distill.experiments import EXPERIMENTS


def test_step_flops_of_two_mlps_match_the_hand_count():
    """Linear layers only: forward 2 * in * out per image and layer; the backward adds the weight gradients (the
    same again) and the input gradients of every layer but the first (its input, the images, needs none)."""
    step = count_step_flops("mlp_small", "mlp_large", num_classes=10, input_shape=(1, 8, 8), batch=4)
    assert step.teacher_forward == 4 * 2 * (64 * 32 + 32 * 10)
    forward = 2 * (64 * 256 + 256 * 256 + 256 * 10)
    assert step.student_forward_backward == 4 * (2 * forward + 2 * (256 * 256 + 256 * 10))
    assert step.total(sam=True) == step.teacher_forward + 2 * step.student_forward_backward
    assert count_step_flops(None, "mlp_large", 10, (1, 8, 8), 4).teacher_forward == 0


def test_hours_steps_runs_and_sam():
    assert gpu_hours(0.1 * H100_BF16_DENSE_PEAK * 3600) == pytest.approx(1.0)
    assert gpu_hours(0.05 * H100_BF16_DENSE_PEAK * 3600, fraction=0.05) == pytest.approx(1.0)
    assert DATA["cifar100"][3] == 240 * 782 and DATA["imagenet"][3] == 100 * 2503
    assert pair_architectures("ResNet34-ResNet18") == ("ResNet34", "ResNet18")
    tals = [e for e in EXPERIMENTS if e.pair == "ResNet34-ResNet18"]
    costs = {cost.experiment.method: cost for cost in experiment_costs(tals)}
    assert costs["grid"].runs == 4 and costs["tals"].runs == costs["dkd"].runs == 1 and costs["tals"].sam
    assert costs["grid"].flops == pytest.approx(4 * costs["tals"].flops)
    step = costs["tals"].step
    assert costs["tals"].flops == float(step.teacher_forward + 2 * step.student_forward_backward) * 240 * 782
