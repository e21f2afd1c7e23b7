"""Block-KD (distill.methods): stepping stones, frozen teacher, the loss against a float64 reference, every policy,
SAM's second pass and a command-line run.

- Stones of every block for resnet32x4 -> resnet8x4, resnet32x4 -> ShuffleV2 (another family, resized
  connectors) and cnn_large -> mlp_small / cnn_small on 8x8 and 28x28 images: logits of the right shape, equal
  to an explicit composition of the stages, the same batched or one by one, and gradient through the frozen
  teacher stages into the connectors and the student's first block.
- Training steps leave the teacher's weights and BatchNorm buffers bit-identical.
- The loss (and its gradient) equals the documented formula computed directly in float64 with explicit
  softmax/KL/CE, for both cross-term temperature sources, detached or not; gradcheck through the whole method.
- KD, LSKD, CTKD (global, instance), TALS, DKD, TTM, max-logit each train a few finite steps.
- One SAM step with Block-KD equals a hand SAM step on the Block-KD loss.
- A short CLI run on digits lowers the loss, logs the stone scalars, checkpoints the connectors and exports only
  the student; 2-process CPU DDP trains the connectors identically on both ranks.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from distill.data import DigitsDataModule
from distill.divergences import DKD
from distill.errors import DistillError
from distill.methods import BlockwiseDistillation, SteppingStones, aligned_teacher_blocks, block_ends
from distill.models import create, stages
from distill.module import DistillationModule
from distill.optim import SAM
from distill.policies import (
    CurriculumTemperature,
    FixedTemperature,
    MaxLogitTemperature,
    SigmaAnchoredTemperature,
    TransformedTeacherTemperature,
)
from teachers import ExportTeacher
from teachers.checkpoint import save_teacher_checkpoint
from tests.conftest import CONFIGS, experiment, run_cli
from tests.test_ddp_policies import SameOnEveryRank
from tests.test_sam import hand_perturbation, hand_sgd, quiet_trainer, trainable

BLOCKKD = CONFIGS / "methods" / "blockkd.yaml"


# -- blocks and alignment ----------------------------------------------------------------------------
def test_block_ends_and_relative_depth_alignment():
    assert block_ends(5) == [1, 2, 3]  # [stem, layer1, layer2, layer3, head]: the stem is in block 1
    assert block_ends(5, stem_is_block=True) == [0, 1, 2, 3]
    assert block_ends(2) == [0]  # [stem, head]: one block, the stem
    assert aligned_teacher_blocks(3, 3) == [1, 2, 3]
    assert aligned_teacher_blocks(2, 3) == [2, 3]  # 1.5 rounds up
    assert aligned_teacher_blocks(3, 4) == [1, 3, 4]  # 1.33, 2.67, 4
    assert aligned_teacher_blocks(4, 3) == [1, 2, 2, 3]  # 0.75, 1.5, 2.25, 3
    assert aligned_teacher_blocks(1, 3) == [3]  # one student block: the whole body into the teacher's head


# -- the stones ------------------------------------------------------------------------------------
# teacher, student, image shape, classes, teacher block after which each stone enters, connector layer types
PAIRS = [
    ("resnet32x4", "resnet8x4", (3, 32, 32), 100, [1, 2, 3], ["Conv2d", "BatchNorm2d"]),
    ("resnet32x4", "ShuffleV2", (3, 32, 32), 100, [1, 2, 3], ["Conv2d", "Upsample", "BatchNorm2d"]),
    ("cnn_large", "mlp_small", (1, 8, 8), 10, [3], ["Flatten", "Linear", "Unflatten", "BatchNorm2d"]),
    ("cnn_large", "mlp_small", (1, 28, 28), 10, [3], ["Flatten", "Linear", "Unflatten", "BatchNorm2d"]),
    ("cnn_large", "cnn_small", (1, 28, 28), 10, [2, 3], ["AdaptiveAvgPool2d", "Conv2d", "BatchNorm2d"]),
]


def frozen(model):
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("teacher_name, student_name, shape, classes, entries, first_connector", PAIRS)
def test_stones_of_every_block_give_logits_and_gradient_through_the_teacher(
    teacher_name, student_name, shape, classes, entries, first_connector
):
    torch.manual_seed(0)
    teacher = frozen(create(teacher_name, classes, shape))
    student = create(student_name, classes, shape)
    stones = SteppingStones(student, teacher, shape)
    assert stones.teacher_blocks == entries
    assert [type(layer).__name__ for layer in stones.connectors[0]] == first_connector
    images = torch.randn(2, *shape)
    student_logits, stone_logits = stones(images)
    assert student_logits.shape == (2, classes) and len(stone_logits) == len(entries)
    assert all(logits.shape == (2, classes) for logits in stone_logits)
    # Each stone is the explicit composition: student stages up to its block end, connector, teacher stages after.
    student_parts, teacher_parts = stages(student), stages(teacher)
    for i, (end, start) in enumerate(zip(stones.student_ends, stones.teacher_starts)):
        x = images
        for part in student_parts[: end + 1]:
            x = part(x)
        x = stones.connectors[i](x)
        for part in teacher_parts[start:]:
            x = part(x)
        torch.testing.assert_close(stone_logits[i], x, rtol=1e-4, atol=1e-5)
    # One stone at a time gives the same logits (the frozen teacher treats every sample on its own).
    stones.batched = False
    for batched, alone in zip(stone_logits, stones(images)[1]):
        torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)
    # The gradient of the first stone alone (which runs the most teacher stages) reaches its connector and the
    # student's stem through the frozen teacher; the teacher gets none.
    stone_logits[0].square().sum().backward()
    stem_weight = next(student_parts[0].parameters())
    assert stem_weight.grad is not None and stem_weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stones.connectors[0].parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert list(stones.state_dict()) == [key for key in stones.state_dict() if key.startswith("connectors.")]


# -- the module ------------------------------------------------------------------------------------
def blockkd_module(policy=None, student="cnn_small", divergence=None, **method) -> DistillationModule:
    torch.manual_seed(0)
    return DistillationModule(
        student=student,
        teacher="digits_cnn",
        temperature_policy=policy if policy is not None else FixedTemperature(T=4.0, ce_weight=0.1, kd_weight=0.9),
        divergence=divergence,
        method=BlockwiseDistillation(**{"cross": True, **method}),  # the cross term on: every term tested
        optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=5e-4),
    )


def teacher_state(module):
    return {name: tensor.clone() for name, tensor in module.teacher.state_dict().items()}


class KeepBatches(Callback):
    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(tuple(tensor.clone() for tensor in batch))


def test_training_keeps_the_teacher_frozen_and_trains_student_and_connectors():
    module = blockkd_module()
    before = teacher_state(module)
    student_before = copy.deepcopy(module.student.state_dict())
    connectors_before = copy.deepcopy(module.method.stones.connectors.state_dict())
    quiet_trainer(devices=1, max_steps=3).fit(module, DigitsDataModule(batch_size=32))
    after = module.teacher.state_dict()
    assert all(torch.equal(after[name], value) for name, value in before.items())  # weights and BN buffers
    assert not any(layer.training for layer in module.teacher.modules())
    assert all(not p.requires_grad for p in module.teacher.parameters())
    for old, new in ((student_before, module.student.state_dict()),
                     (connectors_before, module.method.stones.connectors.state_dict())):  # fmt: skip
        assert all(not torch.equal(new[name], value) for name, value in old.items() if name.endswith("weight"))
    assert int(module.method.stones.connectors[0][1].num_batches_tracked) == 3


@pytest.mark.parametrize("student", ["cnn_small", "mlp_small"])
def test_fashion_mnist_shaped_pair_trains_through_the_module(tmp_path, student):
    """cnn_large -> student on 28x28 images through DistillationModule, with a random-weight teacher file of the
    shipped Fashion-MNIST teacher's shape: the test checks the stones' shapes and the training step, which do
    not depend on the trained weights (teachers/checkpoints/fashion_mnist_cnn.pt)."""
    torch.manual_seed(0)
    path = save_teacher_checkpoint(tmp_path / "fashion_cnn.pt", create("cnn_large", 10, (1, 28, 28)), "cnn_large", 10,
                                   (1, 28, 28), "random", 0.0)  # fmt: skip
    module = DistillationModule(student=student, teacher=str(path), num_classes=10, input_shape=(1, 28, 28),
                                method=BlockwiseDistillation())  # fmt: skip
    optimizer = module.configure_optimizers()["optimizer"]
    images, labels = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for _ in range(2):
        optimizer.zero_grad()
        output = module.training_step((images, labels, torch.arange(16)), 0)
        output["loss"].backward()
        optimizer.step()
        assert torch.isfinite(output["loss"])
        assert all(p.grad.abs().sum() > 0 for p in module.method.parameters())


# -- the loss against the documented formula -----------------------------------------------------
# float64 helpers written out (they keep the graph, unlike tests/_reference.py, so gradients can be compared).
def log_softmax(x):
    top = x.max(dim=-1, keepdim=True).values.detach()
    return x - top - torch.log(torch.exp(x - top).sum(dim=-1, keepdim=True))


def std(x):
    """Unbiased per-row standard deviation."""
    centred = x - x.sum(-1, keepdim=True) / x.shape[-1]
    return torch.sqrt((centred * centred).sum(-1) / (x.shape[-1] - 1))


def kl_rows(target_logits, logits, target_T, T):
    """``sum_j p_j (log p_j - log q_j)`` with p = softmax(target / target_T), q = softmax(logits / T)."""
    log_p, log_q = log_softmax(target_logits / target_T), log_softmax(logits / T)
    return (torch.exp(log_p) * (log_p - log_q)).sum(-1)


def reference_blockkd_loss(images, labels, module, alpha, beta, gamma, cross_temperature, detach):
    """L of docs/blockkd.md with LSKD's frame (T=2, CE 0.1, KD 9 x T^2, z-scored sides), in float64 on a float64
    copy of the module's student, connectors and teacher (stages composed here, not by the method)."""
    copy64 = copy.deepcopy(module).double()
    student_parts, teacher_parts = stages(copy64.student), stages(copy64.teacher)
    connectors = copy64.method.stones.connectors
    # cnn_small [stem, block, head], cnn_large [stem, block, block, head]; stem counted as a block on both sides:
    # stone 1 = student stem -> C_1 -> teacher stages 2, 3; stone 2 = student stem, block -> C_2 -> teacher head.
    x = images.double()
    f1 = student_parts[0](x)
    f2 = student_parts[1](f1)
    s = student_parts[2](f2)
    z1 = teacher_parts[3](teacher_parts[2](connectors[0](f1)))
    z2 = teacher_parts[3](connectors[1](f2))
    t = copy64.teacher(x)
    base_T, ce_weight, kd_weight = 2.0, 0.1, 9.0 * 2.0**2

    def scaled(logits):  # LSKD's per-row temperature, [B, 1]
        return base_T * (std(logits) + 1e-7).unsqueeze(-1)

    def task(logits):
        return (ce_weight * -log_softmax(logits).gather(1, labels[:, None]).squeeze(1)).mean()

    def distill(logits, target):
        return (kd_weight * kl_rows(target, logits, scaled(target), scaled(logits))).mean()

    ensemble = (z1 + z2) / 2
    ensemble = ensemble.detach() if detach else ensemble
    if cross_temperature == "teacher":  # each model's temperatures from its own term against the teacher, constant
        cross = sum((kd_weight * kl_rows(ensemble, x, scaled(t), scaled(x).detach())).mean() for x in (s, z1, z2))
    else:  # the policy's temperatures for (ensemble, model)
        cross = sum(distill(x, ensemble) for x in (s, z1, z2))
    weights = (0.5, 1.0)
    loss = alpha * (task(s) + weights[0] * task(z1) + weights[1] * task(z2))
    loss = loss + beta * (distill(s, t) + weights[0] * distill(z1, t) + weights[1] * distill(z2, t)) + gamma * cross
    student_kd = kl_rows(t, s, scaled(t), scaled(s))
    return loss, student_kd, copy64


@pytest.mark.parametrize("cross_temperature, detach", [("policy", True), ("policy", False), ("teacher", True)])
def test_loss_and_gradient_equal_the_formula_in_float64(digits_batch, cross_temperature, detach):
    lskd = FixedTemperature(T=2.0, ce_weight=0.1, kd_weight=9.0, standardize=True)
    module = blockkd_module(lskd, alpha=0.7, beta=1.3, gamma=0.4, cross_temperature=cross_temperature,
                            detach_ensemble=detach).train()  # fmt: skip
    images, labels, _ = digits_batch
    images, labels = images[:16], labels[:16]
    expected, expected_kd, copy64 = reference_blockkd_loss(images, labels, module, 0.7, 1.3, 0.4, cross_temperature,
                                                           detach)  # fmt: skip
    step = module.training_loss(images, labels, module.teacher_logits(images))
    torch.testing.assert_close(step.loss.double(), expected, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(step.per_sample["kd"].double(), expected_kd, rtol=2e-5, atol=1e-6)
    # The gradient too (the cross term's detach and temperatures change it), for the connectors and the student.
    names = [name for name, p in module.named_parameters() if p.requires_grad]
    got = torch.autograd.grad(step.loss, [p for p in module.parameters() if p.requires_grad])
    want = torch.autograd.grad(expected, [p for p in copy64.parameters() if p.requires_grad])
    for name, g, w in zip(names, got, want):
        torch.testing.assert_close(g.double(), w, rtol=1e-3, atol=1e-5, msg=name)
    assert set(step.scalars) == {"stone_1_loss", "stone_2_loss", "loss_cross"}


def test_gradcheck_through_the_stones():
    """The frame computes in float32, so gradcheck runs on the stones (student, connectors, frozen teacher) in float64;
    the float64 comparison above covers the loss's gradient."""
    torch.manual_seed(0)
    teacher = frozen(create("cnn_small", 10, (1, 8, 8))).double()
    stones = SteppingStones(create("cnn_tiny", 10, (1, 8, 8)).double(), teacher, (1, 8, 8)).double()
    images = torch.randn(3, 1, 8, 8, dtype=torch.float64, requires_grad=True)  # no flat regions: no max-pool ties
    assert torch.autograd.gradcheck(lambda x: torch.cat([stones(x)[0], *stones(x)[1]]), (images,), fast_mode=True)


# -- every policy composes -------------------------------------------------------------------------------
POLICIES = {
    "kd": lambda: (FixedTemperature(T=4.0, ce_weight=0.1, kd_weight=0.9), None),
    "lskd": lambda: (FixedTemperature(T=2.0, ce_weight=0.1, kd_weight=9.0, standardize=True), None),
    "ctkd_global": lambda: (CurriculumTemperature(mode="global", ramp_epochs=2), None),
    "ctkd_instance": lambda: (CurriculumTemperature(mode="instance", ramp_epochs=2), None),
    "tals": lambda: (SigmaAnchoredTemperature(), None),
    "dkd": lambda: (FixedTemperature(T=4.0, ce_weight=1.0, kd_weight=1.0), DKD(beta=2.0, warmup=1)),
    "ttm": lambda: (TransformedTeacherTemperature(T=4.0, beta=4.0), None),
    "max_logit": lambda: (MaxLogitTemperature(), None),
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_trains_a_few_finite_steps(digits_batch, name):
    policy, divergence = POLICIES[name]()
    module = blockkd_module(policy, divergence=divergence, cross_temperature="teacher" if name == "tals" else "policy")
    optimizer = module.configure_optimizers()["optimizer"]
    images, labels, index = digits_batch
    policy_before = [p.detach().clone() for p in module.temperature_policy.parameters()]
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        output = module.training_step((images, labels, index), 0)
        output["loss"].backward()
        optimizer.step()
        losses.append(output["loss"].detach())
    assert all(torch.isfinite(loss) for loss in losses)
    assert torch.isfinite(output["per_sample"]["kd"]).all() and output["per_sample"]["kd"].shape == labels.shape
    for before, after in zip(policy_before, module.temperature_policy.parameters()):  # CTKD's theta / MLP train
        assert not torch.equal(before, after)


# -- SAM --------------------------------------------------------------------------------------------
def test_sam_step_with_blockkd_equals_a_hand_sam_step():
    module = blockkd_module()
    module.optimizer_factory = partial(SAM, lr=0.1, momentum=0.9, weight_decay=5e-4, rho=0.05)
    reference = copy.deepcopy(module).train()
    before = teacher_state(module)
    keep = KeepBatches()
    quiet_trainer(devices=1, max_steps=2, callbacks=[keep]).fit(module, DigitsDataModule(batch_size=32))
    parameters, momentum = trainable(reference), [None] * len(trainable(reference))
    for images, labels, _ in keep.batches:
        loss = reference.training_loss(images, labels, reference.teacher_logits(images)).loss  # BN moves once
        perturbation = hand_perturbation(torch.autograd.grad(loss, parameters), parameters, 0.05)
        perturbed = copy.deepcopy(reference)
        with torch.no_grad():
            for parameter, e in zip(trainable(perturbed), perturbation):
                parameter.add_(e)
        second = perturbed.training_loss(images, labels, perturbed.teacher_logits(images)).loss
        update = torch.autograd.grad(second, trainable(perturbed))
        weights, momentum = hand_sgd([p.detach() for p in parameters], update, momentum, 0.1, 0.9, 5e-4)
        with torch.no_grad():
            for parameter, weight in zip(parameters, weights):
                parameter.copy_(weight)
    for (name, parameter), expected in zip(module.named_parameters(), reference.parameters()):
        torch.testing.assert_close(parameter, expected, rtol=1e-4, atol=1e-5, msg=name)
    for (name, buffer), expected in zip(module.method.named_buffers(), reference.method.buffers()):
        torch.testing.assert_close(buffer, expected, rtol=1e-4, atol=1e-5, msg=name)
    assert int(module.method.stones.connectors[1][1].num_batches_tracked) == 2  # the second pass moved no statistics
    assert all(torch.equal(module.teacher.state_dict()[name], value) for name, value in before.items())


# -- errors and the command line --------------------------------------------------------------------
def test_refusals_are_one_line():
    with pytest.raises(DistillError, match="model.method") as error:
        DistillationModule(student="cnn_small", teacher=None, method=BlockwiseDistillation())
    assert "\n" not in str(error.value)
    with pytest.raises(DistillError, match="stone_weights") as error:
        blockkd_module(stone_weights=[1.0, 2.0, 3.0])  # cnn_small has 2 stones
    assert "\n" not in str(error.value)
    with pytest.raises(DistillError, match="cross_temperature"):
        BlockwiseDistillation(cross_temperature="ensemble")
    with pytest.raises(DistillError, match="connector"):
        blockkd_module(connector="conv3x3")


def scalars(run_dir) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    events.Reload()
    return {tag: [event.value for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_cli_run_on_digits_lowers_the_loss_logs_stones_and_exports_only_the_student(tmp_path):
    layers = experiment("kd", pair="digits_cnn-cnn_small") + [BLOCKKD]
    cli = run_cli(tmp_path, "--trainer.limit_train_batches=8", "--per_sample_statistics.every_n_steps=4",
                  "--model.method.init_args.cross=true", config=layers)  # fmt: skip
    assert isinstance(cli.model.method, BlockwiseDistillation)
    logged = scalars(cli.trainer.log_dir)
    losses = logged["train/loss"]
    assert len(losses) == 16 and sum(losses[-3:]) < sum(losses[:3])
    for tag in ("train/stone_1_loss", "train/stone_2_loss", "train/loss_cross", "per_sample/kd_mean"):
        assert len(logged[tag]) > 0 and all(value == value for value in logged[tag]), tag
    checkpoint = torch.load(next((tmp_path / "runs").rglob("last.ckpt")), map_location="cpu", weights_only=True)
    keys = checkpoint["state_dict"]
    assert any(key.startswith("method.stones.connectors.") for key in keys)
    assert not any(key.startswith("teacher.") for key in keys)
    export = ExportTeacher(path=str(tmp_path / "exported.pt"))
    export.on_test_end(cli.trainer, cli.model)
    exported = torch.load(tmp_path / "exported.pt", map_location="cpu", weights_only=True)
    assert set(exported["state_dict"]) == set(cli.model.student.state_dict())


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_blockkd_trains_under_ddp(tmp_path):
    """2 CPU processes: every connector gets a gradient each step (DDP's reducer raises otherwise) and both ranks
    hold the same student and connectors after 3 steps."""
    module = blockkd_module()
    connectors = {name: p.detach().clone() for name, p in module.method.named_parameters()}
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy=DDPStrategy(start_method="fork", timeout=timedelta(seconds=60)),
        max_steps=3, limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[SameOnEveryRank()], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, DigitsDataModule(batch_size=32))
    assert trainer.state.finished
    assert all(not torch.equal(p.detach(), connectors[name]) for name, p in module.method.named_parameters())


def test_without_stones_and_cross_term_it_is_the_plain_frame(digits_batch):
    """Zero stone weights and no cross term leave exactly the student's own CE + KD term."""
    images, labels, _ = digits_batch
    module = blockkd_module(stone_weights=[0.0, 0.0], cross=False)
    plain = blockkd_module()
    plain.method = None
    teacher_logits = module.teacher_logits(images)
    with_method = module.training_loss(images, labels, teacher_logits).loss
    without = plain.training_loss(images, labels, teacher_logits).loss
    torch.testing.assert_close(with_method, without, rtol=1e-6, atol=1e-7)
