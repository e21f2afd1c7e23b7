"""Every temperature policy and both divergences train under DDP: 2 CPU processes (gloo, ddp_fork).

One ``fit`` per method config in configs/methods (with its digits adjustment; KL everywhere, DKD in
dkd.yaml), 3 steps each: enough
for DDP's reducer to fail on a parameter that got no gradient (it raises at the next step when
``find_unused_parameters`` is off) and for a NaN to show in the loss. ddp_fork needs no pickling and
starts fast: about 1 s a run on 2 cores (ddp_spawn costs 5-7 s).
"""

from __future__ import annotations

import math
from datetime import timedelta

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy

from distill.data import DigitsDataModule
from distill.divergences import Divergence
from distill.module import DistillationModule
from distill.policies import TemperaturePolicy
from tests.conftest import CONFIGS, config_args, experiment

# blockkd.yaml is a layer on top of a policy config, not a policy (tests/test_blockwise.py runs it under DDP).
NOT_POLICIES = ("grid", "ce", "blockkd")
POLICIES = sorted(path.stem for path in (CONFIGS / "methods").glob("*.yaml") if path.stem not in NOT_POLICIES)


def build(policy: str) -> tuple[TemperaturePolicy, Divergence]:
    """The digits experiment's temperature policy and divergence, parsed by the CLI from its config layers."""
    from distill.cli import cli_main

    cli = cli_main([*config_args(experiment(policy)), "--per_sample_statistics=null"], run=False)
    return cli.model.temperature_policy, cli.model.divergence


class SameOnEveryRank(Callback):
    """In each worker at the end of training: 3 steps done, and every trainable parameter (the student's
    and the policy's, e.g. CTKD's theta or MLP) is the same on both ranks, i.e. DDP reduced its gradient."""

    def on_train_end(self, trainer, pl_module) -> None:
        assert trainer.global_step == 3
        trainable = [parameter.detach().flatten() for parameter in pl_module.parameters() if parameter.requires_grad]
        flat = torch.cat(trainable)
        gathered = trainer.strategy.all_gather(flat)
        assert gathered.shape[0] == 2 and torch.equal(gathered[0], gathered[1])


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("policy", POLICIES)
def test_policy_trains_under_ddp(tmp_path, policy):
    temperature_policy, divergence = build(policy)
    L.seed_everything(0)
    module = DistillationModule(temperature_policy=temperature_policy, divergence=divergence)
    initial = {name: value.detach().clone() for name, value in module.named_parameters() if value.requires_grad}
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(start_method="fork", timeout=timedelta(seconds=60)),
        max_steps=3,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SameOnEveryRank()],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DigitsDataModule(batch_size=32))
    assert trainer.state.finished
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    # Rank 0's weights come back to this process: finite, and every trainable parameter was updated.
    for name, parameter in module.named_parameters():
        if name in initial:
            assert torch.isfinite(parameter).all(), name
            assert not torch.equal(parameter.detach(), initial[name]), f"{name} was not trained"
