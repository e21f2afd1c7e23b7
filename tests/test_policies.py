"""Every temperature policy against a float64 reference (``tests/_reference.py``) written from its paper and
official code, the sources in README.md's policy table (Hinton KD, LSKD, CTKD, max-logit, TALS, TTM/WTTM, DKD)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill.divergences import DKD, KL
from distill.errors import DistillError
from distill.losses import kl_div
from distill.policies import (
    MIN_TEMPERATURE,
    CurriculumTemperature,
    FixedTemperature,
    GridTemperature,
    MaxLogitTemperature,
    SigmaAnchoredTemperature,
    Temperatures,
    TransformedTeacherTemperature,
    cosine_ramp,
    reverse_gradient,
    standardized_temperature,
    variance_share,
)
from tests import _reference as ref

SEEDS = [0, 1, 2]
F64 = dict(rtol=1e-10, atol=1e-12)
F32 = dict(rtol=1e-5, atol=1e-6)
CLASSES = 10
MAX_LOGIT_FACTOR = (1 + math.sqrt(3)) / 2


def logits(seed: int, batch: int = 6, classes: int = CLASSES, scale: float = 3.0, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(batch, classes, generator=generator, dtype=torch.float64)).to(dtype)


def pair(seed: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher, student) logits."""
    return logits(seed, **kwargs), logits(seed + 50, **kwargs)


def assert_close(actual: torch.Tensor, expected, **tolerance) -> None:
    expected = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual.to(torch.float64), expected.expand_as(actual), **tolerance)


def per_side(teacher, student, base) -> dict[str, torch.Tensor]:
    """Expected z-scoring temperatures of both sides: ``base * (std + 1e-7)`` each."""
    return {"teacher": ref.standardized(teacher, base), "student": ref.standardized(student, base)}


def assert_temperatures(result: Temperatures, batch: int, **expected) -> None:
    assert isinstance(result, Temperatures)
    for name, value in result.as_dict().items():
        assert value.shape == (batch,), name
    for name, value in expected.items():
        assert_close(getattr(result, name), value, **F64)


# ------------------------------------------------------------------------------------------ fixed / LSKD


@pytest.mark.parametrize("T, ce, kd", [(4.0, 0.1, 0.9), (1.0, 0.5, 0.5), (2.0, 0.1, 9.0)])
def test_fixed_temperature(T, ce, kd):
    teacher, student = pair(0)
    result = FixedTemperature(T, ce, kd)(teacher, student, epoch=1)
    assert_temperatures(result, 6, teacher=T, student=T, kd_weight=kd * T**2, ce_weight=ce, alpha=kd / (ce + kd))


@pytest.mark.parametrize("seed", SEEDS)
def test_fixed_standardized_temperature_is_per_side(seed):
    teacher, student = pair(seed)
    result = FixedTemperature(2.0, 0.1, 9.0, standardize=True)(teacher, student, epoch=3)
    assert_temperatures(
        result,
        6,
        **per_side(teacher, student, 2.0),
        kd_weight=9.0 * 2.0**2,
        ce_weight=0.1,
        alpha=9.0 / 9.1,
    )
    result32 = FixedTemperature(2.0, 0.1, 9.0, standardize=True)(teacher.float(), student.float(), epoch=3)
    assert_close(result32.student, ref.standardized(student, 2.0), **F32)


def test_fixed_rejects_a_non_positive_temperature():
    with pytest.raises(ValueError):
        FixedTemperature(T=0.0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("tau", [0.5, 2.0, 7.0])
def test_zscore_is_a_per_side_temperature(seed, tau):
    """``softmax((x - mean)/(std + eps)/tau) == softmax(x / (tau * (std + eps)))`` (shift invariance)."""
    x = logits(seed, scale=4.0) + 11.0  # a shifted row: the mean matters on the left only
    sigma = ref.std(x).unsqueeze(-1) + 1e-7
    z = (x - x.mean(dim=-1, keepdim=True)) / sigma
    assert_close(ref.softmax(z / tau), ref.softmax(x / (tau * sigma)), rtol=1e-12, atol=1e-15)

    teacher, student = x, logits(seed + 9, scale=0.5) - 3.0
    result = kl_div(
        student, teacher, standardized_temperature(student, tau), standardized_temperature(teacher, tau)
    )
    assert_close(result, ref.kl(ref.zscore(student), ref.zscore(teacher), tau, tau), **F64)
    # The standardised loss ignores any per-row shift and any positive per-row scale of the logits.
    moved = kl_div(
        3.0 * student + 5.0,
        0.25 * teacher - 2.0,
        standardized_temperature(3.0 * student + 5.0, tau),
        standardized_temperature(0.25 * teacher - 2.0, tau),
    )
    assert_close(moved, result, rtol=1e-6, atol=1e-12)  # only the 1e-7 of the std moves it


def test_standardized_temperature_gradcheck():
    teacher, student = pair(4, batch=3, classes=5)
    student.requires_grad_()
    policy = FixedTemperature(2.0, standardize=True)
    assert torch.autograd.gradcheck(lambda s: policy(teacher, s, 1).student, (student,))
    assert torch.autograd.gradcheck(lambda s: standardized_temperature(s, 3.0), (student,))


# ------------------------------------------------------------------------------------------------- grid


def test_grid_expands_to_fixed_runs_with_shared_weights():
    grid = GridTemperature()
    runs = grid.expand()
    assert [run.T for run in runs] == [1.0, 2.0, 4.0, 8.0]
    assert all(type(run) is FixedTemperature for run in runs)
    assert all((run.ce_weight, run.kd_weight, run.standardize) == (0.1, 0.9, False) for run in runs)

    runs = GridTemperature(values=[3, 6], ce_weight=0.2, kd_weight=0.8, standardize=True).expand()
    assert [(run.T, run.ce_weight, run.kd_weight, run.standardize) for run in runs] == [
        (3.0, 0.2, 0.8, True),
        (6.0, 0.2, 0.8, True),
    ]
    teacher, student = pair(0)
    assert_close(runs[1](teacher, student, 1).kd_weight, 0.8 * 36.0, **F64)


def test_grid_cannot_train_by_itself():
    teacher, student = pair(0)
    with pytest.raises(DistillError, match="distill-sweep"):
        GridTemperature()(teacher, student, 1)
    with pytest.raises(ValueError):
        GridTemperature(values=())


# ------------------------------------------------------------------------------------------------- CTKD


@pytest.mark.parametrize(
    "epoch, expected",
    [(0, 0.0), (1, 0.0245), (2, 0.0955), (3, 0.2061), (4, 0.3455), (5, 0.5), (6, 0.6545), (7, 0.7939),
     (8, 0.9045), (9, 0.9755), (10, 1.0), (11, 1.0), (12, 1.0), (240, 1.0)],
)  # fmt: skip
def test_ctkd_curriculum_schedule(epoch, expected):
    assert cosine_ramp(epoch, 10) == pytest.approx(expected, abs=5e-5)
    assert cosine_ramp(epoch, 10) == pytest.approx(ref.cosine_ramp(epoch, 10), abs=1e-15)
    assert CurriculumTemperature().curriculum_lambda(epoch) == pytest.approx(ref.cosine_ramp(epoch, 10), abs=1e-15)


def test_ctkd_imagenet_ramp_and_no_ramp():
    assert [round(cosine_ramp(e, 5), 4) for e in range(1, 7)] == [0.0955, 0.3455, 0.6545, 0.9045, 1.0, 1.0]
    assert cosine_ramp(1, 0) == 1.0


def test_ctkd_global_initial_temperature_and_weights():
    teacher, student = pair(0)
    policy = CurriculumTemperature().double()
    result = policy(teacher, student, epoch=1)
    T0 = 1.0 + 20.0 / (1.0 + math.exp(-1.0))
    assert T0 == pytest.approx(15.62, abs=5e-3)
    assert_temperatures(result, 6, teacher=T0, student=T0, kd_weight=0.9 * T0**2, ce_weight=0.1, alpha=0.9)
    assert policy.monitored_state()["ctkd/temperature"].item() == pytest.approx(T0)
    assert policy.monitored_state()["ctkd/lambda"].item() == pytest.approx(ref.cosine_ramp(1, 10))
    # The float32 parameter (the default) gives the same T to float32 precision.
    assert_close(CurriculumTemperature()(teacher, student, 1).teacher, T0, **F32)


def test_ctkd_range_and_standardize():
    teacher, student = pair(1)
    policy = CurriculumTemperature(t_min=2.0, t_range=5.0, standardize=True).double()
    with torch.no_grad():
        policy.theta.fill_(-0.3)
    T = 2.0 + 5.0 / (1.0 + math.exp(0.3))
    result = policy(teacher, student, epoch=4)
    assert_temperatures(
        result,
        6,
        **per_side(teacher, student, T),
        kd_weight=0.9 * T**2,
        ce_weight=0.1,
    )
    for theta in (-50.0, 50.0):  # the sigmoid bounds T to (t_min, t_min + t_range)
        with torch.no_grad():
            policy.theta.fill_(theta)
        raw = policy.raw_temperature(teacher, student, 4)
        assert ((raw >= 2.0) & (raw <= 7.0)).all()


def test_ctkd_theta_is_a_checkpointed_parameter():
    policy = CurriculumTemperature()
    assert isinstance(policy.theta, torch.nn.Parameter)
    assert any(parameter is policy.theta for parameter in policy.parameters())
    state = policy.state_dict()
    assert list(state) == ["theta"] and state["theta"].item() == 1.0
    with torch.no_grad():
        policy.theta.fill_(-0.7)
    restored = CurriculumTemperature()
    restored.load_state_dict(policy.state_dict())
    assert restored.theta.item() == pytest.approx(-0.7)


def ctkd_kd_loss(policy: CurriculumTemperature, teacher, student, epoch: int) -> torch.Tensor:
    result = policy(teacher, student, epoch)
    return (result.kd_weight * kl_div(student, teacher, result.student, result.teacher)).mean()


def plain_kd_loss(theta: torch.Tensor, teacher, student) -> torch.Tensor:
    """The same KD loss with no gradient reversal: ``0.9 T^2 KL``, ``T = 1 + 20 sigmoid(theta)``."""
    T = (1.0 + 20.0 * torch.sigmoid(theta)).squeeze()  # theta is [1]: a 0-d (scalar) temperature
    return (0.9 * T**2 * kl_div(student, teacher, T, T)).mean()


@pytest.mark.parametrize("epoch", [1, 3, 5, 10, 12])
def test_ctkd_gradient_reversal_sign(epoch):
    """theta's gradient is ``-lambda(epoch)`` times the one it would get without reversal."""
    teacher, student = pair(2)
    policy = CurriculumTemperature().double()
    student = student.clone().requires_grad_()
    ctkd_kd_loss(policy, teacher, student, epoch).backward()

    theta = policy.theta.detach().clone().requires_grad_()
    student_plain = student.detach().clone().requires_grad_()
    plain_kd_loss(theta, teacher, student_plain).backward()
    assert theta.grad.abs().item() > 1e-6
    assert_close(policy.theta.grad, -ref.cosine_ramp(epoch, 10) * theta.grad, **F64)
    # The student's own gradient is untouched by the reversal.
    assert_close(student.grad, student_plain.grad, **F64)


def test_ctkd_one_sgd_step_ascends_for_theta_and_descends_for_the_student():
    teacher, student = pair(3)
    policy = CurriculumTemperature().double()
    student = student.clone().requires_grad_()
    before = ctkd_kd_loss(policy, teacher, student, epoch=12)
    before.backward()
    lr = 1e-3
    with torch.no_grad():
        theta_after = policy.theta - lr * policy.theta.grad
        student_after = student - lr * student.grad
        # Only theta moves: the KD loss goes up. Only the student moves: it goes down.
        assert plain_kd_loss(theta_after, teacher, student) > before
        assert plain_kd_loss(policy.theta, teacher, student_after) < before


@pytest.mark.parametrize("epoch", [2, 10])
def test_ctkd_temperature_derivative_matches_finite_differences(epoch):
    """dT/dtheta in float64: the analytic gradient is ``-lambda`` times the central difference."""
    teacher, student = pair(0)
    policy = CurriculumTemperature().double()
    with torch.no_grad():
        policy.theta.fill_(0.37)
    policy(teacher, student, epoch).teacher.sum().backward()
    h = 1e-6
    with torch.no_grad():
        policy.theta.add_(h)
        plus = policy.raw_temperature(teacher, student, epoch).sum().item()
        policy.theta.sub_(2 * h)
        minus = policy.raw_temperature(teacher, student, epoch).sum().item()
    numeric = (plus - minus) / (2 * h)
    assert policy.theta.grad.item() == pytest.approx(-ref.cosine_ramp(epoch, 10) * numeric, rel=1e-8)


@pytest.mark.parametrize("mode", ["global", "instance"])
def test_ctkd_gradcheck_with_the_reversal_undone(mode):
    """At lambda = 1 a second reversal on the parameters cancels CTKD's, so gradcheck applies as is.

    In instance mode the MLP's inputs are detached by design (T_i does depend on the student's
    softmax, but no gradient flows that way), so the student logits are not a checked input there.
    """
    torch.manual_seed(2)
    teacher, student = pair(8, batch=3, classes=4)
    student.requires_grad_(mode == "global")
    policy = CurriculumTemperature(mode=mode, standardize=True, num_classes=4).double()
    names = [name for name, _ in policy.named_parameters()]
    parameters = tuple(parameter.detach().clone().requires_grad_() for parameter in policy.parameters())

    def outputs(s, *values):
        unreversed = {name: reverse_gradient(value, 1.0) for name, value in zip(names, values)}
        result = torch.func.functional_call(policy, unreversed, (teacher, s, 10))
        return result.teacher, result.student, result.kd_weight

    assert torch.autograd.gradcheck(outputs, (student, *parameters))


def test_reverse_gradient_is_identity_forward():
    x = torch.linspace(-2, 2, 5, dtype=torch.float64, requires_grad=True)
    y = reverse_gradient(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.arange(5.0, dtype=torch.float64)).sum().backward()
    assert_close(x.grad, -0.25 * torch.arange(5.0, dtype=torch.float64), **F64)


def mlp_reference(policy: CurriculumTemperature, teacher, student) -> torch.Tensor:
    """``t_min + t_range * sigmoid(W2 relu(W1 [softmax(t), softmax(s)] + b1) + b2)`` in float64."""
    first, last = policy.mlp[0], policy.mlp[2]
    features = torch.cat([ref.softmax(teacher), ref.softmax(student)], dim=-1)
    hidden = (features @ ref.f64(first.weight).T + ref.f64(first.bias)).clamp_min(0.0)
    out = (hidden @ ref.f64(last.weight).T + ref.f64(last.bias)).squeeze(-1)
    return policy.t_min + policy.t_range / (1.0 + torch.exp(-out))


def test_ctkd_instance_temperatures():
    torch.manual_seed(0)
    teacher, student = pair(5)
    policy = CurriculumTemperature(mode="instance", num_classes=CLASSES).double()
    result = policy(teacher, student, epoch=4)
    T = mlp_reference(policy, teacher, student)
    assert_temperatures(result, 6, teacher=T, student=T, kd_weight=0.9 * T**2, ce_weight=0.1)
    assert result.teacher.std() > 0  # one T per sample
    with pytest.raises(RuntimeError, match="num_classes"):
        CurriculumTemperature(mode="instance")(teacher, student, 1)


def test_ctkd_instance_gradients_reach_the_mlp_not_the_student_through_it():
    torch.manual_seed(1)
    teacher, student = pair(6)
    teacher.requires_grad_()
    student.requires_grad_()
    policy = CurriculumTemperature(mode="instance", num_classes=CLASSES).double()
    raw = policy.raw_temperature(teacher, student, epoch=12)
    assert torch.autograd.grad(raw.sum(), (student, teacher), allow_unused=True) == (None, None)

    ctkd_kd_loss(policy, teacher.detach(), student.detach(), epoch=12).backward()
    grads = [parameter.grad for parameter in policy.parameters()]
    assert all(grad is not None and torch.isfinite(grad).all() for grad in grads)
    assert all(grad.abs().sum() > 0 for grad in grads)
    # Reversed: the last bias gets minus the gradient of the same loss without reversal.
    bias = policy.mlp[2].bias.detach().clone().requires_grad_()
    features = torch.cat([teacher.softmax(-1), student.softmax(-1)], dim=-1).detach()
    out = F.linear(policy.mlp[1](policy.mlp[0](features)), policy.mlp[2].weight.detach(), bias).squeeze(-1)
    T = 1.0 + 20.0 * torch.sigmoid(out)
    (0.9 * T**2 * kl_div(student.detach(), teacher.detach(), T, T)).mean().backward()
    assert_close(policy.mlp[2].bias.grad, -bias.grad, **F64)


# --------------------------------------------------------------------------------------------- max-logit


def max_logit_tau(teacher, student, source="both") -> torch.Tensor:
    extreme = ref.max_abs_zscore(teacher)
    if source == "both":
        extreme = torch.maximum(extreme, ref.max_abs_zscore(student))
    return MAX_LOGIT_FACTOR * extreme


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("source", ["both", "teacher"])
def test_max_logit_temperatures(seed, source):
    teacher, student = pair(seed, classes=100)
    result = MaxLogitTemperature(source=source)(teacher, student, epoch=1)
    tau = max_logit_tau(teacher, student, source)
    assert_temperatures(
        result,
        6,
        **per_side(teacher, student, tau),
        kd_weight=9.0 * tau**2,
        ce_weight=0.1,
        alpha=9.0 / 9.1,
    )
    result32 = MaxLogitTemperature(source=source)(teacher.float(), student.float(), epoch=1)
    assert_close(result32.kd_weight, 9.0 * tau**2, **F32)


def test_max_logit_tau_has_no_gradient():
    teacher, student = pair(0)
    teacher.requires_grad_()
    student.requires_grad_()
    policy = MaxLogitTemperature()
    assert not policy.tau(teacher, student).requires_grad
    result = policy(teacher, student, 1)
    assert not result.kd_weight.requires_grad
    assert result.student.requires_grad  # through the std, as z-scoring


def test_max_logit_source_teacher_ignores_a_more_extreme_student():
    teacher = logits(0)
    student = torch.zeros_like(teacher)
    student[:, 2] = 50.0  # one-hot rows: max |z| = (C - 1) / sqrt(C), the largest possible
    both = MaxLogitTemperature("both").tau(teacher, student)
    only_teacher = MaxLogitTemperature("teacher").tau(teacher, student)
    # One-hot row of height a: centred max a (C - 1) / C, unbiased std a / sqrt(C).
    height = 50.0
    extreme = height * (CLASSES - 1) / CLASSES / (height / math.sqrt(CLASSES) + 1e-7)
    assert_close(both, MAX_LOGIT_FACTOR * extreme, **F64)
    assert_close(only_teacher, MAX_LOGIT_FACTOR * ref.max_abs_zscore(teacher), **F64)
    assert (only_teacher < both).all()
    with pytest.raises(ValueError):
        MaxLogitTemperature(source="student")


def test_max_logit_tau_range_for_100_classes():
    classes = 100
    # max |z| with the unbiased std: sqrt((C-1)/C) for a +-1 row, (C-1)/sqrt(C) for a one-hot row.
    low = MAX_LOGIT_FACTOR * math.sqrt((classes - 1) / classes)
    high = MAX_LOGIT_FACTOR * (classes - 1) / math.sqrt(classes)
    assert (round(low, 2), round(high, 1)) == (1.36, 13.5)
    random_rows = torch.cat([logits(seed, classes=classes, scale=scale) for seed, scale in [(0, 1), (1, 10), (2, 1e4)]])
    one_hot = torch.full((2, classes), -3.0, dtype=torch.float64)
    one_hot[:, 7] = 1e4  # the most extreme row possible
    two_valued = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(2, classes // 2)  # the least extreme
    rows = torch.cat([random_rows, one_hot, two_valued])
    tau = MaxLogitTemperature("teacher").tau(rows, rows)
    # The + 1e-7 on the std moves the ends by about 1e-7 relative.
    assert ((tau >= low * (1 - 1e-6)) & (tau <= high * (1 + 1e-6))).all()
    assert_close(tau[-4:-2], high, rtol=1e-6, atol=0)
    assert_close(tau[-2:], low, rtol=1e-6, atol=0)


def test_max_logit_constant_rows_floor_tau():
    constant = torch.full((2, CLASSES), 3.0, dtype=torch.float64)
    result = MaxLogitTemperature()(constant, constant, 1)
    assert_close(result.kd_weight, 9.0 * MIN_TEMPERATURE**2, **F64)
    assert (result.teacher > 0).all() and (result.student > 0).all()
    assert_close(kl_div(constant, constant, result.student, result.teacher), 0.0, rtol=0, atol=1e-15)


def test_max_logit_student_temperature_gradcheck():
    teacher, student = pair(7, batch=3, classes=5)
    student.requires_grad_()
    policy = MaxLogitTemperature(source="teacher")  # tau does not move with the student
    assert torch.autograd.gradcheck(lambda s: policy(teacher, s, 1).student, (student,))


# -------------------------------------------------------------------------------------------------- TALS


@pytest.mark.parametrize("seed", SEEDS)
def test_sigma_anchored_temperatures(seed):
    teacher, student = pair(seed, scale=1.0 + seed)
    result = SigmaAnchoredTemperature()(teacher, student, epoch=1)
    sigma = ref.std(teacher)
    alpha = sigma**2 / (1.0 + sigma**2)
    assert_temperatures(
        result, 6, teacher=sigma**2, student=sigma**2, kd_weight=alpha * sigma**4, ce_weight=1.0 - alpha, alpha=alpha,
        sigma=sigma,
    )
    assert ((result.alpha >= 0) & (result.alpha < 1)).all()
    assert_close(variance_share(torch.tensor([3.0], dtype=torch.float64)), 0.9, **F64)  # alpha = 0.9 at T = 9


def test_sigma_anchored_constant_teacher_row():
    teacher = logits(0)
    teacher[1] = 4.0
    teacher[3] = 0.0
    student = logits(1).requires_grad_()
    result = SigmaAnchoredTemperature()(teacher, student, epoch=1)
    for row in (1, 3):
        assert result.teacher[row].item() == MIN_TEMPERATURE == result.student[row].item()
        assert result.alpha[row].item() == 0.0 and result.kd_weight[row].item() == 0.0
        assert result.ce_weight[row].item() == 1.0
    loss = (result.ce_weight * F.cross_entropy(student, torch.arange(6), reduction="none")
            + result.kd_weight * kl_div(student, teacher, result.student, result.teacher)).mean()  # fmt: skip
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


def test_sigma_anchored_sigma_comes_from_the_frozen_teacher_only():
    teacher, student = pair(2)
    teacher.requires_grad_()
    student.requires_grad_()
    result = SigmaAnchoredTemperature()(teacher, student, 1)
    assert not any(value.requires_grad for value in result.as_dict().values())


def test_sigma_anchored_alpha_is_swappable():
    teacher, student = pair(3)
    result = SigmaAnchoredTemperature(alpha_fn=lambda sigma: torch.full_like(sigma, 0.5))(teacher, student, 1)
    assert_close(result.kd_weight, 0.5 * ref.std(teacher) ** 4, **F64)
    assert_close(result.ce_weight, 0.5, **F64)


# --------------------------------------------------------------------------------------------- TTM/WTTM


def test_ttm_temperatures():
    teacher, student = pair(0)
    result = TransformedTeacherTemperature(T=4.0, beta=36.0)(teacher, student, epoch=1)
    assert_temperatures(result, 6, teacher=4.0, student=1.0, kd_weight=36.0, ce_weight=1.0, alpha=36.0 / 37.0)
    with pytest.raises(ValueError):
        TransformedTeacherTemperature(T=-1.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_wttm_weights_by_the_power_sum(seed):
    teacher, student = pair(seed, classes=100)
    result = TransformedTeacherTemperature(T=10.0, beta=4.0, weighted=True)(teacher, student, epoch=1)
    weight = 4.0 * ref.power_sum(teacher, 10.0)
    assert_temperatures(
        result, 6, teacher=10.0, student=1.0, kd_weight=weight, ce_weight=1.0, alpha=weight / (1.0 + weight)
    )
    assert ((result.kd_weight >= 4.0) & (result.kd_weight <= 4.0 * 100 ** 0.9)).all()


# --------------------------------------------------------------------------------- all policies, edge rows


def policies() -> dict[str, callable]:
    return {
        "fixed": lambda: FixedTemperature(),
        "lskd": lambda: FixedTemperature(2.0, 0.1, 9.0, standardize=True),
        "ctkd": lambda: CurriculumTemperature(),
        "ctkd_lskd": lambda: CurriculumTemperature(standardize=True),
        "ctkd_instance": lambda: CurriculumTemperature(mode="instance", num_classes=CLASSES),
        "max_logit": lambda: MaxLogitTemperature(),
        "max_logit_teacher": lambda: MaxLogitTemperature(source="teacher"),
        "tals": lambda: SigmaAnchoredTemperature(),
        "ttm": lambda: TransformedTeacherTemperature(T=4.0, beta=36.0),
        "wttm": lambda: TransformedTeacherTemperature(T=10.0, beta=4.0, weighted=True),
    }


def edge_batch(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher, student) logits that break naive code."""
    teacher, student = pair(11, batch=8, dtype=torch.float32)
    teacher[0] = 2.0  # constant teacher row (sigma = 0)
    teacher[1] = 0.0
    student[2] = -1.0  # constant student row
    if kind == "huge":
        teacher[3, 4], student[4, 5] = 1e4, -1e4
        teacher[5] *= 1e4
        student[6] *= 1e4
        teacher[7] = 1e4
    if kind in ("float16", "bfloat16"):
        dtype = getattr(torch, kind)
        teacher[3, 4], student[4, 5] = 1e4, -1e4
        # Z-scoring a constant student row divides by tau * 1e-7: a float32 gradient of ~3e6 (the
        # formula's own, as the official code), more than a float16 gradient can hold.
        student[2] = logits(13, batch=1, dtype=torch.float32)
        teacher, student = teacher.to(dtype), student.to(dtype)
    return teacher, student


@pytest.mark.parametrize("kind", ["constant_teacher", "huge", "float16", "bfloat16"])
@pytest.mark.parametrize("divergence", ["kl", "dkd"])
@pytest.mark.parametrize("name", list(policies()))
def test_every_policy_gives_a_finite_loss_and_gradient(name, divergence, kind):
    torch.manual_seed(0)
    policy = policies()[name]()
    teacher, student = edge_batch(kind)
    student.requires_grad_()
    target = torch.arange(8) % CLASSES
    criterion = KL() if divergence == "kl" else DKD(warmup=20)

    result = policy(teacher, student, epoch=5)
    for field, value in result.as_dict().items():
        assert torch.isfinite(value).all(), field
        assert value.dtype in (torch.float32, torch.float64), field  # half inputs: float32 arithmetic
    assert (result.teacher > 0).all() and (result.student > 0).all()
    kd = criterion(student, teacher, target, result.student, result.teacher, epoch=5)
    ce = F.cross_entropy(student.float(), target, reduction="none")
    loss = (result.ce_weight * ce + result.kd_weight * kd).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(student.grad).all()
    for parameter in policy.parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(policies()))
def test_half_inputs_give_the_float32_policy_on_the_rounded_logits(name, dtype):
    teacher, student = pair(12, dtype=dtype)
    policy = policies()[name]()
    half = policy(teacher, student, epoch=3)
    single = policy(teacher.float(), student.float(), epoch=3)
    for field in half.as_dict():
        value = getattr(half, field)
        assert value.dtype == torch.float32, field
        torch.testing.assert_close(value, getattr(single, field), rtol=1e-6, atol=1e-7, msg=field)


# -------------------------------------------------------------------------------------------------- constants


def test_constant_weights_are_made_once_per_batch_size_dtype_and_mode():
    """A policy's constant fields come from a cache: the same tensor for the same batch size, dtype and device, the
    value exact in that dtype; a tensor made under inference_mode is never handed to a training step."""
    from distill.policies.base import per_sample

    like32 = torch.zeros(6, 3)
    like16, like64 = torch.zeros(6, 3, dtype=torch.float16), torch.zeros(6, 3, dtype=torch.float64)
    first = per_sample(15.62, like32)
    assert per_sample(15.62, like32) is first and first.shape == (6,) and first.dtype == torch.float32
    assert torch.equal(first, torch.full((6,), 15.62))
    assert per_sample(15.62, like16) is first  # float16 logits: computed in float32, so the same tensor
    assert per_sample(15.62, like64).dtype == torch.float64 and float(per_sample(15.62, like64)[0]) == 15.62
    assert per_sample(15.62, torch.zeros(4, 3)).shape == (4,)
    with torch.inference_mode():
        inside = per_sample(15.62, like32)
    assert inside is not first and inside.is_inference() and not per_sample(15.62, like32).is_inference()
    # The cached constant enters the autograd graph as any constant does, step after step.
    student = torch.randn(6, 3, requires_grad=True)
    for _ in range(2):
        result = FixedTemperature(T=2.0)(torch.randn(6, 3), student, 1)
        (result.kd_weight * kl_div(student, torch.randn(6, 3), result.student, result.teacher)).sum().backward()
    assert torch.isfinite(student.grad).all()
    # A tensor value is not cached (it changes from step to step).
    theta = torch.tensor(3.0)
    assert torch.equal(per_sample(theta, like32), torch.full((6,), 3.0))
    assert per_sample(theta, like32) is not per_sample(theta, like32)
