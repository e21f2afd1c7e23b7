"""kl_div, dkd, power_sum and logit_std against independent float64 references (tests/_reference.py)."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses import dkd, kl_div, power_sum
from distill.policies import logit_std
from tests import _reference as ref

SEEDS = [0, 1, 2]
F64 = dict(rtol=1e-10, atol=1e-12)  # float64 against the float64 reference
F32 = dict(rtol=1e-5, atol=1e-6)  # float32 against the float64 reference


def logits(seed: int, batch: int = 8, classes: int = 10, scale: float = 3.0, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(batch, classes, generator=generator, dtype=torch.float64)).to(dtype)


def labels(seed: int, batch: int = 8, classes: int = 10) -> torch.Tensor:
    return torch.randint(classes, (batch,), generator=torch.Generator().manual_seed(seed + 100))


def temperatures(kind: str, seed: int, batch: int = 8):
    """The two temperature forms of the contract: a Python float, or a ``[B]`` tensor."""
    if kind == "scalar":
        return 4.0, 2.5
    generator = torch.Generator().manual_seed(seed + 200)
    return (
        0.5 + 8 * torch.rand(batch, generator=generator, dtype=torch.float64),
        0.5 + 8 * torch.rand(batch, generator=generator, dtype=torch.float64),
    )


def edge_rows(classes: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student, teacher, target rows that break naive code: constant rows, 1e4 logits, one-hot extremes."""
    base = logits(7, batch=6, classes=classes)
    student, teacher = base[:3].clone(), base[3:].clone()
    student[0] = 0.0  # constant student (sigma = 0)
    teacher[1] = 5.0  # constant teacher
    student[2, 3], teacher[2, 1] = 1e4, 1e4  # 1e4 logits, different classes
    teacher[0] = -1e4
    teacher[0, 0] = 1e4  # teacher row spread over 2e4
    return student, teacher, torch.tensor([0, 1, 3])


def assert_close(actual: torch.Tensor, expected: torch.Tensor, **tolerance) -> None:
    torch.testing.assert_close(actual.to(torch.float64), expected.to(torch.float64), **tolerance)


# ---------------------------------------------------------------------------------------------- kl_div


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", ["scalar", "per_sample"])
@pytest.mark.parametrize("classes", [2, 10, 100])
def test_kl_div_matches_float64_reference(seed, temperature, classes):
    student, teacher = logits(seed, classes=classes), logits(seed + 10, classes=classes)
    student_T, teacher_T = temperatures(temperature, seed)
    expected = ref.kl(student, teacher, student_T, teacher_T)

    result = kl_div(student, teacher, student_T, teacher_T)
    assert result.shape == (8,) and result.dtype == torch.float64
    assert_close(result, expected, **F64)

    result32 = kl_div(student.float(), teacher.float(), student_T, teacher_T)
    assert result32.dtype == torch.float32
    assert_close(result32, expected, **F32)


def test_kl_div_is_zero_for_equal_distributions_and_positive_otherwise():
    x = logits(3)
    torch.testing.assert_close(kl_div(x, x, 2.0, 2.0), torch.zeros(8, dtype=torch.float64), rtol=0, atol=1e-14)
    # The same distribution reached through two temperatures: s / 2 == (s / 2 * 3) / 3.
    torch.testing.assert_close(kl_div(x, 1.5 * x, 2.0, 3.0), torch.zeros(8, dtype=torch.float64), rtol=0, atol=1e-14)
    assert (kl_div(x, logits(4), 2.0, 2.0) > 0).all()


def test_kl_div_has_no_temperature_squared_factor():
    student, teacher = logits(0), logits(1)
    assert_close(kl_div(student, teacher, 4.0, 4.0), ref.kl(student, teacher, 4.0, 4.0), **F64)
    assert not torch.allclose(kl_div(student, teacher, 4.0, 4.0), 16 * ref.kl(student, teacher, 4.0, 4.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kl_div_edge_rows_are_finite_and_exact(dtype):
    student, teacher, _ = edge_rows()
    for student_T, teacher_T in [(1.0, 1.0), (4.0, 2.0), (1e-4, 1e-3)]:
        result = kl_div(student.to(dtype), teacher.to(dtype), student_T, teacher_T)
        assert torch.isfinite(result).all()
        expected = ref.kl(student.to(dtype), teacher.to(dtype), student_T, teacher_T)
        assert_close(result, expected, **(F64 if dtype == torch.float64 else F32))
    # A constant teacher row is uniform whatever the temperature.
    uniform = torch.zeros(1, 10, dtype=torch.float64)
    assert_close(kl_div(student[1:2], teacher[1:2], 1e-4, 1e-4), ref.kl(student[1:2], uniform, 1e-4, 1.0), **F64)


@pytest.mark.parametrize("T", [1e-2, 1e-3, 1e-4])
def test_kl_div_tiny_temperatures(T):
    student, teacher = logits(5), logits(6)
    expected = ref.kl(student, teacher, T, T)
    assert_close(kl_div(student, teacher, T, T), expected, **F64)
    result32 = kl_div(student.float(), teacher.float(), T, T)
    assert torch.isfinite(result32).all()
    # At T -> 0 the values grow like 1 / T, so float32 logit rounding is amplified by 1 / T too.
    assert_close(result32, ref.kl(student.float(), teacher.float(), T, T), rtol=1e-5, atol=1e-6 / T)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kl_div_half_inputs_are_computed_in_float32(dtype):
    student, teacher = logits(0, scale=2.0), logits(1, scale=2.0)
    student_T = torch.linspace(1.0, 4.0, 8)
    result = kl_div(student.to(dtype), teacher.to(dtype), student_T, 2.0)
    assert result.dtype == torch.float32 and torch.isfinite(result).all()
    # Exactly the float32 computation on the rounded logits ...
    exact = ref.kl(student.to(dtype), teacher.to(dtype), student_T, 2.0)
    assert_close(result, exact, **F32)
    # ... and close to the float32 result on the unrounded ones (only the input rounding differs).
    assert_close(result, kl_div(student.float(), teacher.float(), student_T, 2.0), rtol=5e-2, atol=2e-2)
    # Half inputs with 1e4 logits (fp16 max is 65504) stay finite.
    student_e, teacher_e, _ = edge_rows()
    assert torch.isfinite(kl_div(student_e.to(dtype), teacher_e.to(dtype), 1e-3, 1e-3)).all()


def test_kl_div_rejects_a_temperature_of_the_wrong_shape():
    student, teacher = logits(0), logits(1)
    with pytest.raises(ValueError, match=r"\[B\]"):
        kl_div(student, teacher, torch.ones(8, 1), 1.0)
    # A 0-d tensor is a scalar temperature.
    assert_close(kl_div(student, teacher, torch.tensor(2.0), 3.0), ref.kl(student, teacher, 2.0, 3.0), **F64)


def test_kl_div_gradcheck():
    student = logits(0, batch=3, classes=5).requires_grad_()
    teacher = logits(1, batch=3, classes=5).requires_grad_()
    student_T = torch.tensor([0.7, 2.0, 5.0], dtype=torch.float64, requires_grad=True)
    teacher_T = torch.tensor([1.5, 3.0, 0.9], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kl_div, (student, teacher, student_T, teacher_T))
    # Python-float temperatures, gradient w.r.t. the student only.
    assert torch.autograd.gradcheck(lambda s: kl_div(s, teacher.detach(), 1e-2, 3.0), (student,))


def test_kl_div_gradient_at_huge_logits_is_finite():
    student, teacher, _ = edge_rows()
    student = student.float().requires_grad_()
    kl_div(student, teacher.float(), 1e-3, 1e-3).sum().backward()
    assert torch.isfinite(student.grad).all()


# ------------------------------------------------------------------------------------------------- dkd


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", ["scalar", "per_sample"])
@pytest.mark.parametrize("classes", [2, 10, 100])
def test_dkd_matches_mdistiller_reference(seed, temperature, classes):
    student, teacher = logits(seed, classes=classes), logits(seed + 10, classes=classes)
    target = labels(seed, classes=classes)
    student_T, teacher_T = temperatures(temperature, seed)
    expected = ref.dkd_mdistiller(student, teacher, target, student_T, teacher_T, alpha=1.5, beta=6.0)
    # The log-space limit reference agrees with mdistiller's -1000 mask wherever the mask is enough.
    assert_close(ref.dkd_limit(student, teacher, target, student_T, teacher_T, 1.5, 6.0), expected, **F64)

    result = dkd(student, teacher, target, student_T, teacher_T, alpha=1.5, beta=6.0)
    assert result.shape == (8,) and result.dtype == torch.float64
    assert_close(result, expected, **F64)
    result32 = dkd(student.float(), teacher.float(), target, student_T, teacher_T, alpha=1.5, beta=6.0)
    assert result32.dtype == torch.float32
    assert_close(result32, expected, **F32)


def test_dkd_defaults_are_alpha_1_beta_8_without_temperature_squared():
    student, teacher, target = logits(0), logits(1), labels(0)
    expected = ref.dkd_mdistiller(student, teacher, target, 4.0, 4.0, alpha=1.0, beta=8.0)
    assert_close(dkd(student, teacher, target, 4.0, 4.0), expected, **F64)


def test_dkd_decomposes_kl():
    """Zhao et al.'s identity: ``KL = TCKD + (1 - p^t_target) * NCKD`` (same temperature on both sides)."""
    student, teacher, target = logits(2, classes=20), logits(3, classes=20), labels(2, classes=20)
    tckd = dkd(student, teacher, target, 3.0, 3.0, alpha=1.0, beta=0.0)
    nckd = dkd(student, teacher, target, 3.0, 3.0, alpha=0.0, beta=1.0)
    teacher_target = ref.softmax(teacher / 3.0)[torch.arange(8), target]
    assert_close(tckd + (1.0 - teacher_target) * nckd, ref.kl(student, teacher, 3.0, 3.0), **F64)


def test_dkd_stays_finite_where_mdistiller_gives_inf():
    student, teacher, target = edge_rows()
    naive = ref.dkd_mdistiller(student, teacher, target, 4.0, 4.0, dtype=torch.float32)
    assert not torch.isfinite(naive).all()  # log(p_target) of an underflowed mass

    for dtype in (torch.float32, torch.float64):
        result = dkd(student.to(dtype), teacher.to(dtype), target, 4.0, 4.0)
        assert torch.isfinite(result).all()
        expected = ref.dkd_limit(student.to(dtype), teacher.to(dtype), target, 4.0, 4.0)
        assert_close(result, expected, **(F64 if dtype == torch.float64 else F32))


def test_dkd_closed_form_at_huge_logits():
    """Student sure of the target, teacher sure of class 1, scaled logits 2500 apart (T = 4).

    log b_s = [0, log 2 - 2500], log b_t = [-2500, 0]: TCKD = 2500 - log 2 (to float64 precision).
    Non-target rows: student [0, 0] (uniform), teacher [2500, 0] (one-hot): NCKD = log 2.
    mdistiller's log(b_s) is log(0) = -inf here, in float32 and float64 alike.
    """
    student = torch.tensor([[1e4, 0.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[0.0, 1e4, 0.0]], dtype=torch.float64)
    target = torch.tensor([0])
    assert not torch.isfinite(ref.dkd_mdistiller(student, teacher, target, 4.0, 4.0)).all()
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        s, t = student.to(dtype), teacher.to(dtype)
        assert dkd(s, t, target, 4.0, 4.0, 1.0, 0.0).item() == pytest.approx(2500 - math.log(2), rel=tolerance)
        assert dkd(s, t, target, 4.0, 4.0, 0.0, 1.0).item() == pytest.approx(math.log(2), rel=tolerance)
        assert dkd(s, t, target, 4.0, 4.0).item() == pytest.approx(2500 + 7 * math.log(2), rel=tolerance)


def test_dkd_drops_the_target_where_the_1000_mask_is_not_enough():
    """Scaled logits 2500 apart: mdistiller's masked target still dominates NCKD; ours is the exact limit."""
    student = torch.tensor([[1e4, 0.0, 1.0, 2.0]], dtype=torch.float64)
    teacher = torch.tensor([[1e4, 2.0, 1.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([0])
    nckd = dkd(student, teacher, target, 4.0, 4.0, alpha=0.0, beta=1.0)
    assert_close(nckd, ref.kl(student[:, 1:], teacher[:, 1:], 4.0, 4.0), **F64)
    masked = ref.dkd_mdistiller(student, teacher, target, 4.0, 4.0, alpha=0.0, beta=1.0)
    assert masked.item() == pytest.approx(0.0, abs=1e-12)  # the mask left the target as the whole mass


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dkd_half_inputs_are_computed_in_float32(dtype):
    student, teacher, target = logits(0, scale=2.0), logits(1, scale=2.0), labels(0)
    result = dkd(student.to(dtype), teacher.to(dtype), target, 2.0, 2.0)
    assert result.dtype == torch.float32 and torch.isfinite(result).all()
    assert_close(result, ref.dkd_mdistiller(student.to(dtype), teacher.to(dtype), target, 2.0, 2.0), **F32)
    assert_close(result, dkd(student.float(), teacher.float(), target, 2.0, 2.0), rtol=5e-2, atol=5e-2)
    student_e, teacher_e, target_e = edge_rows()
    assert torch.isfinite(dkd(student_e.to(dtype), teacher_e.to(dtype), target_e, 1e-3, 1e-3)).all()


@pytest.mark.parametrize("T", [1e-2, 1e-4])
def test_dkd_tiny_temperatures(T):
    student, teacher, target = logits(5), logits(6), labels(5)
    assert_close(dkd(student, teacher, target, T, T), ref.dkd_limit(student, teacher, target, T, T), **F64)
    assert torch.isfinite(dkd(student.float(), teacher.float(), target, T, T)).all()


def test_dkd_needs_two_classes():
    with pytest.raises(ValueError, match="2 classes"):
        dkd(torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), 1.0, 1.0)


def test_dkd_gradcheck():
    student = logits(0, batch=3, classes=5).requires_grad_()
    teacher = logits(1, batch=3, classes=5).requires_grad_()
    target = torch.tensor([0, 4, 2])
    student_T = torch.tensor([0.7, 2.0, 5.0], dtype=torch.float64, requires_grad=True)
    teacher_T = torch.tensor([1.5, 3.0, 0.9], dtype=torch.float64, requires_grad=True)

    def function(s, t, ts, tt):
        return dkd(s, t, target, ts, tt, alpha=1.3, beta=2.0)

    assert torch.autograd.gradcheck(function, (student, teacher, student_T, teacher_T))


def test_dkd_gradient_at_huge_logits_is_finite():
    student, teacher, target = edge_rows()
    student = student.float().requires_grad_()
    dkd(student, teacher.float(), target, 4.0, 4.0).sum().backward()
    assert torch.isfinite(student.grad).all()


# ------------------------------------------------------------------------------------------- power_sum


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", ["scalar", "per_sample"])
def test_power_sum_matches_float64_reference(seed, temperature):
    teacher = logits(seed, classes=100)
    T = temperatures(temperature, seed)[0]
    result = power_sum(teacher, T)
    assert result.shape == (8,) and result.dtype == torch.float64
    assert_close(result, ref.power_sum(teacher, T), **F64)
    assert_close(power_sum(teacher.float(), T), ref.power_sum(teacher, T), **F32)


@pytest.mark.parametrize("T", [1.0, 1.25, 4.0, 10.0])
def test_power_sum_range(T):
    classes = 100
    upper = classes ** (1.0 - 1.0 / T)
    teacher = torch.cat([logits(0, classes=classes), logits(1, classes=classes, scale=30.0)])
    result = power_sum(teacher, T)
    assert (result >= 1.0 - 1e-12).all() and (result <= upper * (1 + 1e-12)).all()
    # One-hot teacher -> 1, uniform teacher -> C^(1 - 1/T) (the two ends of the range).
    one_hot = torch.full((1, classes), -1e4, dtype=torch.float64)
    one_hot[0, 3] = 1e4
    uniform = torch.full((1, classes), 2.5, dtype=torch.float64)
    assert power_sum(one_hot, T).item() == pytest.approx(1.0, rel=1e-12)
    assert power_sum(uniform, T).item() == pytest.approx(upper, rel=1e-12)
    assert power_sum(one_hot.float(), T).item() == pytest.approx(1.0, rel=1e-6)
    assert power_sum(uniform.float(), T).item() == pytest.approx(upper, rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_power_sum_half_inputs(dtype):
    teacher = logits(0, classes=100)
    result = power_sum(teacher.to(dtype), 4.0)
    assert result.dtype == torch.float32 and torch.isfinite(result).all()
    assert_close(result, ref.power_sum(teacher.to(dtype), 4.0), **F32)


def test_power_sum_gradcheck():
    teacher = logits(0, batch=3, classes=5).requires_grad_()
    T = torch.tensor([0.8, 2.0, 6.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(power_sum, (teacher, T))


# ------------------------------------------------------------------------------------------- logit_std


@pytest.mark.parametrize("seed", SEEDS)
def test_logit_std_is_unbiased(seed):
    x = logits(seed, classes=37)
    assert_close(logit_std(x), ref.std(x), **F64)
    assert_close(logit_std(x.float()), ref.std(x), **F32)
    # ddof = 1, not the population std.
    population = ref.std(x) * math.sqrt(36 / 37)
    assert not torch.allclose(logit_std(x), population, rtol=1e-3)


def test_logit_std_edge_rows():
    x = torch.stack([torch.full((10,), 0.1), torch.full((10,), -7.3), torch.linspace(-1e4, 1e4, 10)])
    result = logit_std(x)
    assert torch.isfinite(result).all()
    assert result[:2].abs().max() <= 1e-6
    assert_close(result, ref.std(x), rtol=1e-6, atol=1e-6)
    for dtype in (torch.float16, torch.bfloat16):
        half = logit_std(x.to(dtype))
        assert half.dtype == torch.float32
        assert_close(half, ref.std(x.to(dtype)), rtol=1e-6, atol=1e-6)


def test_logit_std_gradient():
    x = logits(0, batch=3, classes=6).requires_grad_()
    assert torch.autograd.gradcheck(logit_std, (x,))
    # At a constant row (std = 0) the gradient is 0, not NaN.
    constant = torch.zeros(2, 6, requires_grad=True)
    logit_std(constant).sum().backward()
    assert torch.isfinite(constant.grad).all()
