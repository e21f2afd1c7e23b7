"""``PerSampleStatistics`` and ``TemperatureMonitor`` under DDP: 2 CPU processes (gloo, ddp_fork).

The digits train split has 1,293 samples: ``DistributedSampler`` pads it to 1,294 (647 per rank) by
repeating the first sample of its shuffled order, so deduplication has a real duplicate to drop.
Assertions are on the files rank 0 wrote (callback memory stays in the workers).
"""

from __future__ import annotations

import math
from datetime import timedelta

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DistributedSampler

from callbacks import PerSampleStatistics, TemperatureMonitor, read_records, record_files
from distill.data import DigitsDataModule
from distill.module import DistillationModule
from tests.per_sample_runs import events

WORLD = 2
SEED = 0


def padded_duplicate(dataset) -> int:
    """The sample index ``DistributedSampler`` gives twice in epoch 0 (as Lightning configures it)."""
    samplers = [DistributedSampler(dataset, WORLD, rank, shuffle=True, seed=SEED) for rank in range(WORLD)]
    seen = [index for sampler in samplers for index in sampler]
    values, counts = np.unique(seen, return_counts=True)
    (duplicate,) = values[counts > 1]
    return int(duplicate)


@pytest.mark.ddp
@pytest.mark.timeout(180)
def test_ddp_records_have_one_row_per_sample(tmp_path):
    L.seed_everything(SEED)
    data = DigitsDataModule(batch_size=64)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=WORLD,
        strategy=DDPStrategy(start_method="fork", timeout=timedelta(seconds=60)),
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        log_every_n_steps=2,
        logger=TensorBoardLogger(tmp_path, name="ddp", version="v", default_hp_metric=False),
        callbacks=[PerSampleStatistics(every_n_steps=5), TemperatureMonitor()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(DistillationModule(), data)
    assert trainer.state.finished
    run = tmp_path / "ddp" / "v"
    data.setup("fit")
    train = data.datasets["train"]
    assert len(train) % WORLD == 1  # the sampler pads

    assert len(record_files(run)) == 1
    records = read_records(run)
    np.testing.assert_array_equal(records["index"], np.arange(len(train)))  # every sample once
    np.testing.assert_array_equal(records["label"], train.labels.numpy())
    steps = math.ceil(math.ceil(len(train) / WORLD) / 64)  # 647 samples per rank: 11 steps
    assert np.bincount(records["step"]).tolist() == [WORLD * 64] * (steps - 1) + [len(train) - WORLD * 64 * (steps - 1)]
    # The padding repeat comes at the last step; the sample's own (first) row is the one kept.
    assert records["step"][padded_duplicate(train)] == 0

    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # rank 0 writes alone
    accumulator = events(run)
    assert [event.step for event in accumulator.Histograms("per_sample/sigma")] == [4, 9]
    # Windows gather both ranks: 5 steps x 64 x 2 (no padding inside them).
    assert [event.histogram_value.num for event in accumulator.Histograms("per_sample/sigma")] == [640, 640]
    (epoch,) = accumulator.Histograms("per_sample_epoch/T_teacher")
    assert (epoch.step, epoch.histogram_value.num) == (steps - 1, len(train))
    assert [event.step for event in accumulator.Scalars("temperature/teacher_T_mean")] == [1, 3, 5, 7, 9]
    assert torch.isfinite(torch.tensor(records["kd"])).all()
