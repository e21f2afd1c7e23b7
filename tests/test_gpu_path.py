"""The GPU path's switches run on the CPU: channels_last and torch.compile leave the maths and the
checkpoint keys unchanged, and the training step makes no host sync (no .item(), .cpu(), .tolist(),
bool(tensor)) outside logging steps, for every method config."""

from __future__ import annotations

import contextlib

import lightning as L
import pytest
import torch

from distill.data import DigitsDataModule
from distill.module import DistillationModule
from distill.policies import FixedTemperature
from tests.conftest import CONFIGS, config_args, experiment

METHODS = sorted(path.stem for path in (CONFIGS / "methods").glob("*.yaml") if path.stem not in ("grid",))
SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


def losses_and_keys(tmp_path, **switches) -> tuple[list[float], list[str]]:
    """Per-step losses of 4 steps of cnn_small under the digits CNN teacher, and the checkpoint's keys."""
    L.seed_everything(0, verbose=False)
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    module = DistillationModule(student="cnn_small", temperature_policy=FixedTemperature(), **switches)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=4, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        callbacks=[Record()], enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, DigitsDataModule(batch_size=32))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    keys = sorted(torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"])
    return losses, keys


def test_channels_last_and_compile_keep_losses_and_checkpoint_keys(tmp_path):
    plain_losses, plain_keys = losses_and_keys(tmp_path / "plain")
    fast_losses, fast_keys = losses_and_keys(tmp_path / "fast", channels_last=True, compile=True,
                                             compile_backend="aot_eager")  # fmt: skip
    assert fast_keys == plain_keys and not [key for key in fast_keys if "_orig_mod" in key]
    assert fast_losses == pytest.approx(plain_losses, rel=1e-5, abs=1e-6)


@contextlib.contextmanager
def host_syncs_forbidden():
    """Every Python-level way a tensor reaches the host raises while the block runs."""
    saved = {name: getattr(torch.Tensor, name) for name in SYNCING}

    def refuse(name):
        def method(self, *args, **kwargs):
            raise AssertionError(f"host sync in the training step: Tensor.{name}")

        return method

    try:
        for name in SYNCING:
            setattr(torch.Tensor, name, refuse(name))
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


@pytest.mark.parametrize("method", METHODS)
def test_training_step_makes_no_host_sync(method, digits_batch):
    from distill.cli import cli_main

    cli = cli_main([*config_args(experiment(method)), "--per_sample_statistics=null"], run=False)
    module = cli.model
    module.train()
    # A step outside any logging interval (no trainer attached: nothing is published), teacher live.
    with host_syncs_forbidden():
        output = module.training_step(digits_batch, 0)
        loss = output["loss"] if isinstance(output, dict) else output
        loss.backward()
    assert torch.isfinite(loss.detach()).all()
