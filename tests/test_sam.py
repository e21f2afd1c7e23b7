"""SAM / ASAM (distill.optim.SAM) against a direct implementation of the update, in Lightning and under CPU DDP.

- The optimizer alone, float64, on a tiny MLP: several steps equal a hand-written SAM (and ASAM) update.
- Through the training module (one SAM step = two forward-backward passes): the student, CTKD's theta, the BN
  running statistics, the logged loss, the train accuracy and the per-sample outputs equal a hand computation that
  runs the first pass on the module and the second on a perturbed copy.
- The command line with configs/optim/sam.yaml (fp32 and bf16-mixed), 2-process gloo DDP, and the refusals.
"""

from __future__ import annotations

import copy
import math
from datetime import timedelta
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.strategies import DDPStrategy
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, Subset

from callbacks import read_records
from distill.data import DigitsDataModule
from distill.errors import DistillError
from distill.module import DistillationModule
from distill.optim import SAM, buffers_unchanged
from distill.policies import CurriculumTemperature
from tests.conftest import REPO, run_cli

SAM_CONFIG = REPO / "configs" / "optim" / "sam.yaml"


# -- a direct implementation of the update ---------------------------------------------------------
def hand_perturbation(gradients, weights, rho, adaptive=False, eta=0.01):
    """e = rho T^2 g / ||T g|| with T = |w| + eta (ASAM) or T = 1 (SAM), the norm over every tensor given."""
    scales = [w.abs() + eta if adaptive else torch.ones_like(w) for w in weights]
    norm = math.sqrt(sum(float(((t * g) ** 2).sum()) for t, g in zip(scales, gradients)))
    return [rho * t * t * g / (norm + 1e-12) for t, g in zip(scales, gradients)]


def hand_sgd(weights, gradients, buffers, lr, momentum, weight_decay, nesterov=False):
    """torch.optim.SGD's update written out (dampening 0): d = g + wd w; b = m b + d (b = d at first); w -= lr b."""
    new_weights, new_buffers = [], []
    for w, g, b in zip(weights, gradients, buffers):
        d = g + weight_decay * w
        b = d if b is None or momentum == 0 else momentum * b + d
        new_weights.append(w - lr * (d + momentum * b if nesterov else b))
        new_buffers.append(b)
    return new_weights, new_buffers


def tiny_mlp_loss(weights, batch):
    """Cross-entropy of a 4 -> 5 -> 3 tanh MLP given as a list of tensors ``[W1 [5,4], b1 [5], W2 [3,5], b2 [3]]``."""
    x, y = batch
    w1, b1, w2, b2 = weights
    return nn.functional.cross_entropy(torch.tanh(x @ w1.T + b1) @ w2.T + b2, y)


def tiny_problem(steps=4):
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in ((5, 4), (5,), (3, 5), (3,))]
    batches = [
        (torch.randn(8, 4, generator=generator, dtype=torch.float64), torch.randint(0, 3, (8,), generator=generator))
        for _ in range(steps)
    ]
    return weights, batches


OPTIMIZER_SETTINGS = [
    dict(lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=False, rho=0.05, adaptive=False),
    dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=False, rho=0.05, adaptive=False),
    dict(lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True, rho=0.2, adaptive=False),
    dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=False, rho=0.5, adaptive=True),
]


@pytest.mark.parametrize("settings", OPTIMIZER_SETTINGS, ids=["plain", "momentum_wd", "nesterov", "adaptive"])
def test_steps_equal_the_hand_update(settings):
    weights, batches = tiny_problem()
    parameters = [nn.Parameter(w.clone()) for w in weights]
    optimizer = SAM(parameters, **settings)
    expected, buffers = [w.clone().requires_grad_() for w in weights], [None] * len(weights)
    for batch in batches:

        def closure():
            optimizer.zero_grad()
            loss = tiny_mlp_loss(parameters, batch)
            loss.backward()
            return loss

        returned = optimizer.step(closure)
        loss = tiny_mlp_loss(expected, batch)
        assert float(returned.detach()) == pytest.approx(float(loss.detach()), abs=1e-12)  # the first pass's loss
        gradients = torch.autograd.grad(loss, expected)
        e = hand_perturbation(gradients, expected, settings["rho"], settings["adaptive"])
        perturbed = [(w + e_w).detach().requires_grad_() for w, e_w in zip(expected, e)]
        second = torch.autograd.grad(tiny_mlp_loss(perturbed, batch), perturbed)
        updated, buffers = hand_sgd(
            [w.detach() for w in expected], second, buffers,
            settings["lr"], settings["momentum"], settings["weight_decay"], settings["nesterov"],
        )  # fmt: skip
        expected = [w.requires_grad_() for w in updated]
        for parameter, reference in zip(parameters, expected):
            torch.testing.assert_close(parameter.detach(), reference.detach(), rtol=1e-12, atol=1e-12)
    assert not optimizer.perturbed


def test_group_with_rho_zero_is_neither_perturbed_nor_in_the_norm():
    weights, batches = tiny_problem(steps=1)
    parameters = [nn.Parameter(w.clone()) for w in weights]
    optimizer = SAM([{"params": parameters[:2]}, {"params": parameters[2:], "rho": 0.0}], lr=0.1, rho=0.3)
    tiny_mlp_loss(parameters, batches[0]).backward()
    perturbation = dict((id(p), e) for p, e in optimizer.perturbation())
    assert set(perturbation) == {id(p) for p in parameters[:2]}
    expected = hand_perturbation([p.grad for p in parameters[:2]], parameters[:2], 0.3)
    for parameter, reference in zip(parameters[:2], expected):
        torch.testing.assert_close(perturbation[id(parameter)], reference, rtol=1e-12, atol=1e-15)


def test_rho_zero_is_sgd_in_one_pass_and_zero_gradient_gives_no_perturbation():
    weights, batches = tiny_problem(steps=3)
    sam_parameters = [nn.Parameter(w.clone()) for w in weights]
    sgd_parameters = [nn.Parameter(w.clone()) for w in weights]
    sam = SAM(sam_parameters, lr=0.1, momentum=0.9, weight_decay=5e-4, rho=0.0)
    sgd = torch.optim.SGD(sgd_parameters, lr=0.1, momentum=0.9, weight_decay=5e-4)
    passes = []
    for batch in batches:
        for parameters, optimizer in ((sam_parameters, sam), (sgd_parameters, sgd)):

            def closure():
                passes.append(optimizer)
                optimizer.zero_grad()
                tiny_mlp_loss(parameters, batch).backward()

            optimizer.step(closure)
    assert all(torch.equal(a, b) for a, b in zip(sam_parameters, sgd_parameters))
    assert passes.count(sam) == passes.count(sgd) == 3
    flat = nn.Parameter(torch.ones(3))
    flat.grad = torch.zeros(3)
    assert all(torch.equal(e, torch.zeros(3)) for _, e in SAM([flat], adaptive=True).perturbation())


def test_refusals_are_one_line():
    parameter = nn.Parameter(torch.ones(2))
    with pytest.raises(DistillError, match="rho") as error:
        SAM([parameter], rho=-0.1)
    assert "\n" not in str(error.value)
    with pytest.raises(DistillError, match="16-mixed") as error:
        SAM([parameter]).step()
    assert "\n" not in str(error.value)


def test_loads_a_plain_sgd_state_dict():
    parameter = nn.Parameter(torch.ones(2))
    sgd = torch.optim.SGD([parameter], lr=0.1, momentum=0.9)
    sam = SAM([parameter], rho=0.07)
    sam.load_state_dict(sgd.state_dict())
    assert sam.param_groups[0]["rho"] == 0.07 and sam.param_groups[0]["lr"] == 0.1


def test_buffers_unchanged_keeps_running_statistics_and_the_backward_works():
    layer = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=None))  # momentum None: cumulative average
    layer.train()
    running_mean = layer[1].running_mean
    before = {name: buffer.clone() for name, buffer in layer.named_buffers()}
    with buffers_unchanged(layer):
        output = layer(torch.randn(8, 3))
        assert not torch.equal(layer[1].running_mean, before["1.running_mean"])  # the copy moved
    output.square().sum().backward()  # after the context, as Lightning's closure does
    assert layer[1].running_mean is running_mean and layer[0].weight.grad is not None
    assert all(torch.equal(buffer, before[name]) for name, buffer in layer.named_buffers())


# -- through the training module ---------------------------------------------------------------
def module_loss(module: DistillationModule, batch, epoch: int = 1):
    """``(loss, per_sample)`` of the module's frame on ``batch`` (its own forward, BN in its current mode)."""
    images, labels, _ = batch
    return module.distillation_loss(module.student(images), module.teacher_logits(images), labels, epoch)


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [parameter for parameter in module.parameters() if parameter.requires_grad]


def hand_sam_steps(module, steps, *, lr, momentum, weight_decay, rho, per_replica_perturbation=False):
    """Direct SAM with SGD on ``module`` (changed in place); returns each step's first-pass ``(loss, per_sample)``.

    ``steps``: for each step a list of replica batches; a step's gradient is the mean over them (DDP's all-reduce).
    First passes run on ``module`` itself (so BN running statistics and policy state move once per batch, from the
    unperturbed weights); second passes on a perturbed copy. ``per_replica_perturbation``: each replica perturbs
    with its own gradient (what SAM under DDP would do if the first pass were not synchronised).
    """
    parameters, buffers, first_passes = trainable(module), [None] * len(trainable(module)), []
    for replicas in steps:
        first = []
        for batch in replicas:
            loss, per_sample = module_loss(module, batch)
            first.append(torch.autograd.grad(loss, parameters))
            first_passes.append((loss.detach(), per_sample))
        mean = [torch.stack(grads).mean(0) for grads in zip(*first)]
        perturbations = [
            hand_perturbation(grads if per_replica_perturbation else mean, parameters, rho) for grads in first
        ]
        second = []
        for batch, perturbation in zip(replicas, perturbations):
            perturbed = copy.deepcopy(module)
            with torch.no_grad():
                for parameter, e in zip(trainable(perturbed), perturbation):
                    parameter.add_(e)
            second.append(torch.autograd.grad(module_loss(perturbed, batch)[0], trainable(perturbed)))
        update = [torch.stack(grads).mean(0) for grads in zip(*second)]
        weights, buffers = hand_sgd([p.detach() for p in parameters], update, buffers, lr, momentum, weight_decay)
        with torch.no_grad():
            for parameter, weight in zip(parameters, weights):
                parameter.copy_(weight)
    return first_passes


class RecordSteps(Callback):
    """Each step's batch, per-sample outputs, the loss it added to the module's training-scalar window, the
    window's step count, and CTKD's temperature (the window is not published within these few steps)."""

    def __init__(self):
        self.batches, self.outputs, self.logged_loss, self.accuracy_updates, self.temperature = [], [], [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(tuple(tensor.clone() for tensor in batch))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.outputs.append({name: value.clone() for name, value in outputs["per_sample"].items()})
        window = pl_module.train_window
        self.logged_loss.append(float(window.sums()[0]) - sum(self.logged_loss))
        self.accuracy_updates.append(window.steps_since_pop)
        self.temperature.append(pl_module.temperature_policy.last_temperature.clone())


def sam_module(student: str, rho: float, **policy) -> DistillationModule:
    torch.manual_seed(0)
    return DistillationModule(
        student=student,
        temperature_policy=CurriculumTemperature(mode="global", ramp_epochs=2, **policy),
        optimizer=partial(SAM, lr=0.1, momentum=0.9, weight_decay=5e-4, rho=rho),
    )


def quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **kwargs,
    )  # fmt: skip


def test_module_step_equals_hand_sam_with_ctkd_theta_and_batchnorm():
    module = sam_module("cnn_tiny", rho=0.05)
    reference = copy.deepcopy(module).train()
    theta_before = module.temperature_policy.theta.detach().clone()
    record = RecordSteps()
    quiet_trainer(devices=1, max_steps=3, callbacks=[record]).fit(module, DigitsDataModule(batch_size=32))
    first_passes = hand_sam_steps(
        reference, [[batch] for batch in record.batches], lr=0.1, momentum=0.9, weight_decay=5e-4, rho=0.05
    )
    # Every trainable parameter (student and theta) and every buffer (BN statistics moved once per step).
    for (name, parameter), expected in zip(module.named_parameters(), reference.parameters()):
        torch.testing.assert_close(parameter, expected, rtol=1e-5, atol=1e-6, msg=name)
    for (name, buffer), expected in zip(module.student.named_buffers(), reference.student.buffers()):
        torch.testing.assert_close(buffer, expected, rtol=1e-5, atol=1e-6, msg=name)
    assert int(module.student.features[0][1].num_batches_tracked) == 3
    assert not torch.allclose(module.temperature_policy.theta, theta_before, atol=1e-4), "theta was not trained"
    # Logs, metrics and callbacks describe the first pass (unperturbed weights), once per step.
    assert record.accuracy_updates == [1, 2, 3]
    for step, (loss, per_sample) in enumerate(first_passes):
        torch.testing.assert_close(torch.tensor(record.logged_loss[step]).float(), loss, rtol=1e-5, atol=1e-6)
        for name in ("kd", "ce", "teacher_T", "kd_weight"):
            torch.testing.assert_close(record.outputs[step][name], per_sample[name], rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(record.temperature[step], per_sample["teacher_T"][0], rtol=1e-5, atol=1e-6)


class CountAccuracyUpdates(Callback):
    def __init__(self):
        self.updates = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.updates.append(pl_module.train_window.steps_since_pop)


def test_cross_entropy_only_run_steps_once_per_batch():
    torch.manual_seed(0)
    module = DistillationModule(student="cnn_tiny", teacher=None, optimizer=partial(SAM, lr=0.1, rho=0.05))
    before = [parameter.detach().clone() for parameter in module.parameters()]
    count = CountAccuracyUpdates()
    quiet_trainer(devices=1, max_steps=2, callbacks=[count]).fit(module, DigitsDataModule(batch_size=32))
    assert count.updates == [1, 2] and int(module.student.features[0][1].num_batches_tracked) == 2
    assert all(torch.isfinite(p).all() and not torch.equal(p, b) for p, b in zip(module.parameters(), before))


def test_refuses_gradient_scaler_and_accumulation():
    for trainer_kwargs, fragment in (
        (dict(plugins=[MixedPrecision("16-mixed", "cpu")]), "16-mixed"),  # the GradScaler path (CPU scaler)
        (dict(accumulate_grad_batches=2), "accumulate_grad_batches"),
    ):
        with pytest.raises(DistillError, match=fragment) as error:
            quiet_trainer(devices=1, max_steps=2, **trainer_kwargs).fit(
                sam_module("mlp_small", rho=0.05), DigitsDataModule(batch_size=32)
            )
        assert "\n" not in str(error.value)


# -- the command line --------------------------------------------------------------------------
def scalars(log_dir: Path, tag: str) -> list:
    events = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})
    events.Reload()
    return events.Scalars(tag)


@pytest.mark.slow
def test_cli_with_sam_config_trains_and_logs_once_per_step(tmp_path):
    cli = run_cli(
        tmp_path, f"--config={SAM_CONFIG}", "--trainer.max_epochs=3", "--trainer.limit_train_batches=8",
        "--test_after_fit=false",
    )  # fmt: skip
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, SAM) and optimizer.param_groups[0]["rho"] == 0.05
    assert optimizer.param_groups[0]["lr"] == 0.1  # the recipe's lr is kept: the SAM layer sets only rho
    assert cli.trainer.global_step == 24
    log_dir = Path(cli.trainer.log_dir)
    events = scalars(log_dir, "train/loss")
    assert [event.step for event in events] == list(range(24)), "one train/loss per step"
    losses = [event.value for event in events]
    assert sum(losses[-8:]) / 8 < 0.7 * sum(losses[:8]) / 8, f"training loss did not fall: {losses}"
    records = read_records(log_dir, epochs=[0])
    assert len(records["index"]) == 8 * 64 == len(set(records["index"].tolist())), "one record row per sample"


@pytest.mark.slow
def test_cli_with_sam_in_bf16_mixed_stays_finite(tmp_path):
    cli = run_cli(tmp_path, f"--config={SAM_CONFIG}", "--trainer.precision=bf16-mixed", "--test_after_fit=false")
    assert cli.trainer.precision == "bf16-mixed" and cli.trainer.global_step == 8
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))
    assert all(torch.isfinite(parameter).all() for parameter in cli.model.parameters())


# -- DDP: 2 CPU processes ----------------------------------------------------------------------
UNION_BATCH, DDP_STEPS, DDP_RHO = 64, 3, 0.5  # a large rho makes an unsynchronised first pass visible


class ReplicaBatches(L.LightningDataModule):
    """Union batch j is samples [64 j, 64 j + 64) of the digits training set; with W processes, rank r trains on
    the r-th contiguous 1/W of each union batch (a DistributedSampler's order would be harder to rebuild)."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def replica_order(self, rank: int, world_size: int) -> list[int]:
        share = UNION_BATCH // world_size
        return [step * UNION_BATCH + rank * share + k for step in range(DDP_STEPS) for k in range(share)]

    def train_dataloader(self):
        world_size, rank = self.trainer.world_size, self.trainer.global_rank
        order = self.replica_order(rank, world_size)
        return DataLoader(Subset(self.dataset, order), batch_size=UNION_BATCH // world_size)


class SameOnEveryRank(Callback):
    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([parameter.detach().flatten() for parameter in trainable(pl_module)])
        gathered = trainer.strategy.all_gather(flat)
        assert gathered.shape[0] == 2 and torch.equal(gathered[0], gathered[1])


@pytest.mark.ddp
@pytest.mark.timeout(180)
def test_ddp_synchronises_both_passes(tmp_path, digits):
    data = ReplicaBatches(digits.datasets["train"])
    module = sam_module("mlp_small", rho=DDP_RHO)
    initial = copy.deepcopy(module).train()
    quiet_trainer(
        devices=2, strategy=DDPStrategy(start_method="fork", timeout=timedelta(seconds=60)), max_steps=DDP_STEPS,
        use_distributed_sampler=False, callbacks=[SameOnEveryRank()], default_root_dir=tmp_path,
    ).fit(module, data)  # fmt: skip
    # Rank 0's weights come back to this process. The reference: SAM on the union batches in one process.
    replicas = [Subset(data.dataset, data.replica_order(rank, 2)) for rank in range(2)]
    share = UNION_BATCH // 2

    def batch(rank, step):
        items = [replicas[rank][step * share + k] for k in range(share)]
        return tuple(torch.stack([torch.as_tensor(item[field]) for item in items]) for field in range(3))

    steps = [[batch(rank, step) for rank in range(2)] for step in range(DDP_STEPS)]
    union, local = copy.deepcopy(initial), copy.deepcopy(initial)
    settings = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, rho=DDP_RHO)
    hand_sam_steps(union, steps, **settings)
    hand_sam_steps(local, steps, per_replica_perturbation=True, **settings)
    trained = torch.cat([p.detach().flatten() for p in trainable(module)])
    expected = torch.cat([p.detach().flatten() for p in trainable(union)])
    unsynchronised = torch.cat([p.detach().flatten() for p in trainable(local)])
    torch.testing.assert_close(trained, expected, rtol=1e-5, atol=1e-6)
    # The check can fail: perturbing with each rank's own gradient ends measurably elsewhere.
    assert (trained - unsynchronised).abs().max() > 100 * 1e-6
