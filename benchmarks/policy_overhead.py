"""What each temperature policy (and divergence) adds to a training step, against FixedTemperature + KL.

- ``policy.<method>.cifar_step``: the loss part of the step (policy temperatures, CE, divergence,
  weighted mean, and their backward) timed in isolation on CIFAR-100-shaped logits ([64, 100], many
  calls per unit), and its extra time over Hinton KD's expressed against a measured resnet32x4 ->
  resnet8x4 KD step: ``(step + extra) / step``. Bound 1.03 (instance CTKD reported, not bounded: it
  runs an MLP per sample).
- ``policy.<method>.digits_epoch``: a whole digits epoch (cached teacher -> mlp_small, 2.4k parameters,
  21 steps) with the method against Hinton KD: the worst case, where the student is so small that the
  loss maths is a large share of the step. Reported, not bounded.
"""

from __future__ import annotations

import copy
import tempfile
import warnings

import lightning as L
import torch

from benchmarks.framework_overhead import UnitTimer, quiet_trainer
from benchmarks.harness import Budget, Clock, Figure, Variant, budget, comparison, device, interleave, median_ms
from distill.data import DigitsDataModule
from distill.layers import CONFIGS, config_args, experiment_layers
from distill.module import DistillationModule

BASELINE = "kd"
UNBOUNDED = {"ctkd_instance"}


def method_parts(method: str):
    """The temperature policy and divergence of ``configs/methods/<method>.yaml`` on the digits layers."""
    from distill.cli import cli_main

    cli = cli_main([*config_args(experiment_layers(method)), "--per_sample_statistics=null",
                    "--temperature_monitor=null"], run=False)  # fmt: skip
    return cli.model.temperature_policy, cli.model.divergence


def methods() -> list[str]:
    layers_only = ("grid", "ce", "blockkd")  # a sweep, no teacher, a method layered on a policy
    names = sorted(path.stem for path in (CONFIGS / "methods").glob("*.yaml") if path.stem not in layers_only)
    return [BASELINE, *[name for name in names if name != BASELINE]]


def loss_part_seconds(policy, divergence, on: torch.device, calls: int, units: int, clock: Clock) -> list[float]:
    """Seconds per call of the loss part (forward and backward) on [64, 100] logits."""
    policy = copy.deepcopy(policy)
    if getattr(policy, "mlp", None) is not None:  # CTKD instance: its MLP was built for the digits' 10 classes
        policy.mlp = None  # the module's setup(100) builds it again for 100
    module = DistillationModule(student="mlp_small", teacher=None, temperature_policy=policy,
                                divergence=copy.deepcopy(divergence), num_classes=100, input_shape=(1, 8, 8))  # fmt: skip
    module = module.to(on)
    generator = torch.Generator().manual_seed(0)
    student = (3 * torch.randn(64, 100, generator=generator)).to(on).requires_grad_()
    teacher = (5 * torch.randn(64, 100, generator=generator)).to(on)
    labels = torch.randint(0, 100, (64,), generator=generator).to(on)
    times = []
    for _ in range(units):
        start = clock()
        for _ in range(calls):
            loss, _ = module.distillation_loss(student, teacher, labels, epoch=30)
            loss.backward()
        times.append((clock() - start) / calls)
    return times


def digits_epochs(policy, divergence, plan: Budget, clock: Clock, root: str, name: str) -> list[float]:
    L.seed_everything(0, verbose=False)
    timer = UnitTimer(clock, plan.warmup)
    trainer = quiet_trainer(root, [timer], max_epochs=plan.warmup + plan.timed, log_every_n_steps=5)
    module = DistillationModule(temperature_policy=copy.deepcopy(policy), divergence=copy.deepcopy(divergence))
    trainer.fit(module, DigitsDataModule(batch_size=64))
    return timer.units


def run(mode: str, kd_step_ms: float | None = None) -> list[Figure]:
    """``kd_step_ms``: the measured resnet32x4 -> resnet8x4 KD step (``framework.plain_loop``'s Lightning
    side); without it the cifar_step figures are left out."""
    warnings.filterwarnings("ignore")
    on = device()
    clock = Clock(on)
    names = methods() if mode != "tiny" else [BASELINE, "lskd", "ctkd_instance"]
    parts = {name: method_parts(name) for name in names}
    figures: list[Figure] = []

    loss_plan = budget(mode, Budget(repeats=5, warmup=1, timed=5))
    calls = 2 if mode == "tiny" else 50
    loss = interleave(
        [Variant(name, lambda name=name: loss_part_seconds(*parts[name], on, calls, loss_plan.warmup + loss_plan.timed,
                                                             clock)[loss_plan.warmup:]) for name in names],
        loss_plan.repeats, on,
    )  # fmt: skip
    base_ms = median_ms(loss, BASELINE)
    if kd_step_ms:
        for name in names[1:]:
            extra_ms = median_ms(loss, name) - base_ms
            figures.append(Figure(
                f"policy.{name}.cifar_step", f"{name} vs Hinton KD: the KD step of framework.plain_loop",
                (kd_step_ms + extra_ms) / kd_step_ms, bound=None if name in UNBOUNDED else 1.03,
                variants={name: {"loss_part_ms": median_ms(loss, name)}, BASELINE: {"loss_part_ms": base_ms}},
                setup={"logits": [64, 100], "calls_per_unit": calls, "kd_step_ms": kd_step_ms,
                       "repeats": loss_plan.repeats, "clock": clock.name},
                note="(KD step + this method's extra loss-part time) / KD step",
            ))  # fmt: skip

    epoch_plan = budget(mode, Budget(repeats=4, warmup=1, timed=5))
    root = tempfile.mkdtemp(prefix="bench-policy-")
    epochs = interleave(
        [Variant(name, lambda name=name: digits_epochs(*parts[name], epoch_plan, clock, root, name)) for name in names],
        epoch_plan.repeats, on,
    )  # fmt: skip
    for name in names[1:]:
        figures.append(comparison(
            f"policy.{name}.digits_epoch", f"{name} vs Hinton KD: a digits epoch (tiny MLP student, worst case)",
            epochs, name, BASELINE, on, setup={"pair": "digits_cnn -> mlp_small (cached teacher)", "unit": "epoch"},
        ))  # fmt: skip
    return figures
