"""DDP on 2 CPU processes (gloo, ddp_fork): validation and test accuracy equal the single-process values of the same
weights exactly, the per-sample records hold every training sample once, and a non-finite loss seen by one rank
stops both at the same step.

The digits splits are cut to odd sizes (145 validation, 361 test images), so an evaluation shard that padded
would count a sample twice and one that dropped the remainder would miss one.
"""

from __future__ import annotations

import copy
from datetime import timedelta

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DistributedSampler

from callbacks import PerSampleStatistics, read_records
from distill.data import DigitsDataModule
from distill.module import DistillationModule
from tests.test_nonfinite import POISONED, PoisonedDigits

WORLD = 2
ODD_SPLITS = {"val_fraction": 0.1005, "test_fraction": 0.2005}
ACCURACIES = ("val/acc1", "val/acc5")
TEST_ACCURACIES = ("test/acc1", "test/acc5", "test/teacher_acc1", "test/teacher_acc5")


def trainer(tmp_path, devices: int, **settings) -> L.Trainer:
    strategy = DDPStrategy(start_method="fork", timeout=timedelta(seconds=60)) if devices > 1 else "auto"
    defaults = dict(
        accelerator="cpu", devices=devices, strategy=strategy, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the data modules shard their own splits, as under the distill command
    )  # fmt: skip
    return L.Trainer(**{**defaults, **settings})


@pytest.mark.ddp
@pytest.mark.timeout(180)
def test_accuracy_under_ddp_equals_one_process_exactly(tmp_path):
    data = DigitsDataModule(**ODD_SPLITS)
    data.setup("fit")
    assert (len(data.datasets["val"]), len(data.datasets["test"])) == (145, 361)
    L.seed_everything(0)
    module = DistillationModule()
    trainer(tmp_path, 1, max_steps=15, limit_val_batches=0).fit(module, DigitsDataModule(**ODD_SPLITS))  # past chance

    results = {}
    for devices in (1, WORLD):
        evaluated = copy.deepcopy(module)  # the same weights, fresh metric states for each trainer
        evaluator = trainer(tmp_path, devices)
        evaluator.validate(evaluated, DigitsDataModule(**ODD_SPLITS), verbose=False)
        values = {name: float(evaluator.callback_metrics[name]) for name in ACCURACIES}
        evaluator.test(evaluated, DigitsDataModule(**ODD_SPLITS), verbose=False)
        values |= {name: float(evaluator.callback_metrics[name]) for name in TEST_ACCURACIES}
        results[devices] = values
    assert results[WORLD] == results[1]
    # Counted over whole splits: every accuracy is a whole number of images out of 145 or 361.
    tests = [value for name, value in results[1].items() if name.startswith("test")]
    assert all(abs(value * 361 - round(value * 361)) < 1e-3 for value in tests)
    assert 0.3 < results[1]["test/acc1"] < 1.0 and results[1]["test/teacher_acc1"] > 0.95


@pytest.mark.ddp
@pytest.mark.timeout(180)
def test_records_hold_every_training_sample_once(tmp_path):
    data = DigitsDataModule(**ODD_SPLITS)
    data.setup("fit")
    train = data.datasets["train"]
    assert len(train) % WORLD == 1  # the training sampler pads one repeat
    L.seed_everything(0)
    logger = TensorBoardLogger(tmp_path, name="ddp", version="v", default_hp_metric=False)
    fit = trainer(tmp_path, WORLD, max_epochs=1, limit_val_batches=0, logger=logger,
                  callbacks=[PerSampleStatistics(every_n_steps=0)])  # fmt: skip
    fit.fit(DistillationModule(), DigitsDataModule(**ODD_SPLITS))
    records = read_records(tmp_path / "ddp" / "v")
    np.testing.assert_array_equal(records["index"], np.arange(len(train)))
    np.testing.assert_array_equal(records["label"], train.labels.numpy())


def step_of(sample: int, size: int, batch_size: int = 64) -> tuple[int, int]:
    """``(rank, step)`` at which Lightning's DistributedSampler (shuffled, seed 0, epoch 0) trains ``sample``."""
    for rank in range(WORLD):
        order = list(DistributedSampler(range(size), WORLD, rank, shuffle=True, seed=0))
        if sample in order:
            return rank, order.index(sample) // batch_size
    raise AssertionError(sample)


@pytest.mark.ddp
@pytest.mark.timeout(180)
def test_a_non_finite_loss_on_one_rank_stops_both_at_its_step(tmp_path):
    data = PoisonedDigits()
    rank, step = step_of(POISONED, len(data.train))
    assert step >= 2  # a checkpoint before it
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "hparams.yaml").write_text("{}\n")
    every_two = ModelCheckpoint(dirpath=run / "checkpoints", every_n_train_steps=2, save_top_k=-1, filename="{step}")
    fit = trainer(tmp_path, WORLD, max_epochs=1, limit_val_batches=0, log_every_n_steps=50, enable_checkpointing=True,
                  callbacks=[every_two], use_distributed_sampler=True)  # fmt: skip
    with pytest.raises(Exception) as error:  # a worker's DistillError, as torch.multiprocessing re-raises it
        fit.fit(DistillationModule(teacher=None), data)
    # The poisoned sample is on one rank only; the other rank's loss turns NaN one step later (the all-reduced
    # gradient). Both stop at the next checkpoint and report the first step, with the sample.
    newest = run / "checkpoints" / f"step={2 * (step // 2)}.ckpt"
    assert (
        f"DistillError: non-finite loss at training step {step} (epoch 0), training samples [{POISONED}]; the newest "
        f"checkpoint, {newest}, was written before it and is intact"
    ) in str(error.value)
    written = sorted(int(path.stem.split("=")[1]) for path in (run / "checkpoints").iterdir())
    assert written == list(range(2, 2 * (step // 2) + 1, 2))
    weights = torch.load(newest, weights_only=True)["state_dict"]
    assert all(torch.isfinite(value).all() for value in weights.values())
