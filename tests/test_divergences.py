"""The divergence modules: KL() is kl_div, DKD() is min(epoch / warmup, 1) * dkd."""

from __future__ import annotations

import pytest
import torch

from distill.divergences import DKD, KL
from distill.losses import dkd, kl_div


def batch(seed: int = 0, size: int = 6, classes: int = 10):
    generator = torch.Generator().manual_seed(seed)
    student = 3 * torch.randn(size, classes, generator=generator, dtype=torch.float64)
    teacher = 3 * torch.randn(size, classes, generator=generator, dtype=torch.float64)
    target = torch.randint(classes, (size,), generator=generator)
    student_T = 1 + 4 * torch.rand(size, generator=generator, dtype=torch.float64)
    teacher_T = 1 + 4 * torch.rand(size, generator=generator, dtype=torch.float64)
    return student, teacher, target, student_T, teacher_T


@pytest.mark.parametrize("epoch", [1, 7, 300])
def test_kl_is_kl_div_at_every_epoch(epoch):
    student, teacher, target, student_T, teacher_T = batch()
    result = KL()(student, teacher, target, student_T, teacher_T, epoch)
    assert result.shape == (6,)
    torch.testing.assert_close(result, kl_div(student, teacher, student_T, teacher_T), rtol=0, atol=0)


@pytest.mark.parametrize(
    "warmup, epoch, factor",
    [(20, 1, 0.05), (20, 10, 0.5), (20, 20, 1.0), (20, 30, 1.0), (1, 1, 1.0), (1, 5, 1.0), (0, 1, 1.0), (0, 30, 1.0)],
)
def test_dkd_is_warmed_up_dkd(warmup, epoch, factor):
    student, teacher, target, student_T, teacher_T = batch(1)
    divergence = DKD(alpha=1.0, beta=6.0, warmup=warmup)
    assert divergence.warmup_factor(epoch) == pytest.approx(factor, abs=1e-15)
    result = divergence(student, teacher, target, student_T, teacher_T, epoch)
    expected = factor * dkd(student, teacher, target, student_T, teacher_T, alpha=1.0, beta=6.0)
    assert result.shape == (6,)
    torch.testing.assert_close(result, expected, rtol=1e-15, atol=0)


def test_dkd_defaults_are_mdistiller_cifar():
    divergence = DKD()
    assert (divergence.alpha, divergence.beta, divergence.warmup) == (1.0, 8.0, 20)
    student, teacher, target, student_T, teacher_T = batch(2)
    expected = dkd(student, teacher, target, student_T, teacher_T, alpha=1.0, beta=8.0) * (3 / 20)
    torch.testing.assert_close(divergence(student, teacher, target, student_T, teacher_T, 3), expected)


def test_divergences_pass_gradients_to_the_student():
    student, teacher, target, student_T, teacher_T = batch(3)
    for divergence in (KL(), DKD(warmup=5)):
        logits = student.clone().requires_grad_()
        divergence(logits, teacher, target, student_T, teacher_T, epoch=2).sum().backward()
        assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
