"""DistillationModule: the frozen teacher, the loss frame against a hand computation, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from distill.divergences import KL
from distill.module import PER_SAMPLE_FIELDS, DistillationModule
from distill.policies import CurriculumTemperature, FixedTemperature, MaxLogitTemperature, SigmaAnchoredTemperature


def _module(**kwargs) -> DistillationModule:
    torch.manual_seed(0)
    return DistillationModule(student="mlp_small", teacher="digits_cnn", **kwargs)


def _hand_kd_loss(student, teacher, labels, teacher_T, student_T, ce_weight, kd_weight):
    """The frame written out in float64 with explicit exp/log, per sample then mean."""
    student, teacher = student.detach().double(), teacher.detach().double()
    total = 0.0
    for i in range(student.shape[0]):
        s = [float(v) / float(student_T[i]) for v in student[i]]
        t = [float(v) / float(teacher_T[i]) for v in teacher[i]]
        log_zs = math.log(sum(math.exp(v - max(s)) for v in s)) + max(s)
        log_zt = math.log(sum(math.exp(v - max(t)) for v in t)) + max(t)
        kl = sum(math.exp(tj - log_zt) * ((tj - log_zt) - (sj - log_zs)) for sj, tj in zip(s, t))
        raw = [float(v) for v in student[i]]
        log_z = math.log(sum(math.exp(v - max(raw)) for v in raw)) + max(raw)
        ce = log_z - raw[int(labels[i])]
        total += float(ce_weight[i]) * ce + float(kd_weight[i]) * kl
    return total / student.shape[0]


def test_teacher_is_frozen_and_stays_in_eval_mode(digits_batch):
    module = _module()
    module.train()
    assert module.student.training and not module.teacher.training
    assert all(not p.requires_grad for p in module.teacher.parameters())
    before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    images, labels, index = digits_batch
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        loss, _ = module.distillation_loss(module(images), module.teacher_logits(images), labels, epoch=1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert not module.teacher.training
    after = module.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "teacher weights or BN statistics changed"
    # The teacher's logits carry no autograd history (no_grad, not inference_mode).
    logits = module.teacher_logits(images)
    assert not logits.requires_grad and not logits.is_inference()


def test_optimizer_sees_student_not_teacher():
    module = _module()
    optimizer = module.configure_optimizers()["optimizer"]
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in module.student.parameters()}
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.05


@pytest.mark.parametrize(
    "policy", [FixedTemperature(T=4.0), FixedTemperature(T=2.0, kd_weight=9.0, standardize=True), SigmaAnchoredTemperature()]
)
def test_loss_equals_hand_computed_value(digits_batch, policy):
    module = _module(temperature_policy=policy, divergence=KL())
    images, labels, _ = digits_batch
    images, labels = images[:16], labels[:16]
    student, teacher = module(images), module.teacher_logits(images)
    loss, per_sample = module.distillation_loss(student, teacher, labels, epoch=1)
    temperatures = policy(teacher.double(), student.double(), 1)
    expected = _hand_kd_loss(
        student, teacher, labels, temperatures.teacher, temperatures.student, temperatures.ce_weight, temperatures.kd_weight
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert set(per_sample) == set(PER_SAMPLE_FIELDS) - {"index"}
    assert all(v.shape == (16,) and not v.requires_grad for v in per_sample.values())


def test_hinton_kd_by_hand_on_a_fixed_batch():
    """T=4, 0.1 CE + 0.9 * 16 * KL on two fixed rows, computed here with numbers only."""
    module = _module(temperature_policy=FixedTemperature(T=4.0, ce_weight=0.1, kd_weight=0.9))
    student = torch.tensor([[2.0, 0.0, -1.0, 0, 0, 0, 0, 0, 0, 0], [0.0, 1.0, 0.0, 0, 0, 0, 0, 0, 0, 3.0]])
    teacher = torch.tensor([[4.0, 0.0, 0.0, 0, 0, 0, 0, 0, 0, 0], [0.0, 0.0, 0.0, 0, 0, 0, 0, 0, 0, 8.0]])
    labels = torch.tensor([0, 9])
    loss, _ = module.distillation_loss(student, teacher, labels, epoch=1)
    ones = torch.ones(2)
    expected = _hand_kd_loss(student, teacher, labels, 4 * ones, 4 * ones, 0.1 * ones, 0.9 * 16 * ones)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_low_precision_logits_are_computed_in_float32(digits_batch):
    module = _module()
    images, labels, _ = digits_batch
    student, teacher = module(images), module.teacher_logits(images)
    reference, _ = module.distillation_loss(student, teacher, labels, epoch=1)
    for dtype in (torch.bfloat16, torch.float16):
        loss, per_sample = module.distillation_loss(student.to(dtype), teacher.to(dtype), labels, epoch=1)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert loss.item() == pytest.approx(reference.item(), rel=0.05)
        assert per_sample["teacher_T"].dtype == torch.float32


def test_ce_only_module_has_no_teacher(digits_batch):
    module = DistillationModule(student="mlp_small", teacher=None)
    assert module.teacher is None
    loss = module.training_step(digits_batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_checkpoint_leaves_the_teacher_out_and_loads_strictly(tmp_path):
    module = _module(temperature_policy=SigmaAnchoredTemperature())
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any(k.startswith("teacher.") for k in checkpoint["state_dict"])
    fresh = _module(temperature_policy=SigmaAnchoredTemperature())
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"], strict=True)
    for key, value in module.student.state_dict().items():
        assert torch.equal(fresh.student.state_dict()[key], value)
    del checkpoint["state_dict"]["student.layers.1.weight"]
    with pytest.raises(RuntimeError, match="student.layers.1.weight"):
        fresh.load_state_dict(checkpoint["state_dict"], strict=True)


@pytest.mark.parametrize("policy, computes_sigma", [
    (FixedTemperature(T=4.0), False), (SigmaAnchoredTemperature(), True),
    (FixedTemperature(T=2.0, ce_weight=0.1, kd_weight=9.0, standardize=True), True), (MaxLogitTemperature(), True),
    (CurriculumTemperature(standardize=True), True),
])  # fmt: skip
def test_per_sample_sigma_is_the_teachers_logit_std_computed_once(digits_batch, policy, computes_sigma, monkeypatch):
    """``sigma`` is the teacher's unbiased logit std (float64 reference). TALS computes it anyway: the module logs the
    policy's own tensor instead of computing it again. Temperatures passed in (a method reusing another term's) carry
    another batch's sigma: the module computes this batch's."""
    module = _module(temperature_policy=policy, divergence=KL())
    images, labels, _ = digits_batch
    student, teacher = module(images[:16]), module.teacher_logits(images[:16])
    reference = teacher.double().std(dim=-1)
    calls = []
    monkeypatch.setattr("distill.module.logit_std", lambda logits: calls.append(1) or logits.float().std(dim=-1))
    _, _, per_sample = module.distillation_terms(student, teacher, labels[:16], epoch=1)
    torch.testing.assert_close(per_sample["sigma"].double(), reference, rtol=1e-6, atol=1e-6)
    assert len(calls) == (0 if computes_sigma else 1)
    other = policy(teacher * 3.0, student.float(), 1)
    _, _, per_sample = module.distillation_terms(student, teacher, labels[:16], epoch=1, temperatures=other)
    torch.testing.assert_close(per_sample["sigma"].double(), reference, rtol=1e-6, atol=1e-6)
