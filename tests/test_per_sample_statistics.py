"""``PerSampleStatistics`` end to end: a 2-epoch CLI run on digits read back from its event file and
its raw records, a frozen-student run checked column by column against the module, CE-only runs,
switching it off from the command line, and the record format and deduplication on their own."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

from callbacks import PerSampleStatistics, TemperatureMonitor, read_epoch, read_records, record_files
from callbacks.per_sample_statistics import BUFFER_COLUMNS, HISTOGRAM_NAMES, deduplicate
from callbacks.records import RECORD_COLUMNS, record_path, write_records
from distill.tensorboard_summary import histogram_protos
from distill.data import DigitsDataModule
from distill.module import PER_SAMPLE_FIELDS, DistillationModule
from distill.policies import SigmaAnchoredTemperature, logit_std
from teachers import load_teacher
from tests.conftest import DEFAULT_CONFIG, config_args, run_cli
from tests.per_sample_runs import EVERY_N_STEPS, events, steps_per_epoch, tals_run  # noqa: F401

EPOCHS = 2


@pytest.fixture(scope="module")
def train_set(digits):
    return digits.datasets["train"]


# -- the 2-epoch CLI run ------------------------------------------------------------------------
def test_histograms_at_every_window_and_epoch_end(tals_run, train_set):
    per_epoch = steps_per_epoch(len(train_set))
    last_step = EPOCHS * per_epoch - 1
    # A window closes when the global step after a batch is a multiple of every_n_steps; it is tagged
    # with the step of its last batch (Lightning's x-axis for training scalars).
    window_steps = [step for step in range(last_step + 1) if (step + 1) % EVERY_N_STEPS == 0]
    epoch_steps = [per_epoch * (epoch + 1) - 1 for epoch in range(EPOCHS)]
    accumulator = events(tals_run)
    for name in HISTOGRAM_NAMES.values():
        assert [event.step for event in accumulator.Histograms(f"per_sample/{name}")] == window_steps, name
        assert [event.step for event in accumulator.Histograms(f"per_sample_epoch/{name}")] == epoch_steps, name
        assert [event.step for event in accumulator.Scalars(f"per_sample/{name}_mean")] == window_steps, name
    for event in accumulator.Histograms("per_sample_epoch/sigma"):
        assert event.histogram_value.num == len(train_set)  # the whole epoch, each sample once
    for event in accumulator.Histograms("per_sample/sigma")[:-1]:
        assert event.histogram_value.num > 0
    assert accumulator.Scalars("per_sample_epoch/teacher_acc_mean")[-1].value > 0.9


def test_epoch_means_equal_the_records(tals_run, train_set):
    """The ``_mean`` scalars are read off the histograms at the hand-off: they equal a float64 mean of the records."""
    accumulator = events(tals_run)
    names = {**HISTOGRAM_NAMES, "teacher_correct": "teacher_acc", "student_correct": "student_acc"}
    for epoch, path in enumerate(record_files(tals_run)):
        columns = read_epoch(path)
        for column, name in names.items():
            (point,) = [event for event in accumulator.Scalars(f"per_sample_epoch/{name}_mean") if event.step == columns["step"].max()]
            values = columns[column].astype(np.float64)
            assert point.value == pytest.approx(values[np.isfinite(values)].mean(), rel=1e-6), (epoch, name)


def test_one_record_row_per_training_sample_per_epoch(tals_run, train_set):
    files = record_files(tals_run)
    assert [path.name for path in files] == ["epoch_0000.npy", "epoch_0001.npy"]
    for epoch, path in enumerate(files):
        columns = read_epoch(path)
        assert set(columns) == set(RECORD_COLUMNS)
        assert {name: array.dtype for name, array in columns.items()} == RECORD_COLUMNS
        np.testing.assert_array_equal(columns["index"], np.arange(len(train_set)))  # unique, all, sorted
        np.testing.assert_array_equal(columns["epoch"], epoch)
        np.testing.assert_array_equal(columns["label"], train_set.labels.numpy())
        per_epoch = steps_per_epoch(len(train_set))
        assert columns["step"].min() == epoch * per_epoch and columns["step"].max() == (epoch + 1) * per_epoch - 1
        assert np.bincount(columns["step"] - epoch * per_epoch).tolist()[:-1] == [64] * (per_epoch - 1)
    combined = read_records(tals_run)
    assert len(combined["index"]) == EPOCHS * len(train_set)
    assert len(read_records(tals_run, epochs=[1])["index"]) == len(train_set)


def test_recorded_values_are_what_the_policy_computes(tals_run, train_set):
    """sigma, T, alpha, the weights and the teacher's correctness depend on the frozen teacher only:
    recompute them from the teacher's logits on the recorded indices with the policy itself."""
    teacher = load_teacher("digits_cnn", 10, (1, 8, 8)).eval()
    with torch.no_grad():
        logits = teacher(train_set.images).float()
    expected = SigmaAnchoredTemperature()(logits, logits, epoch=1)
    for epoch in range(EPOCHS):
        records = read_records(tals_run, epochs=[epoch])
        index = records["index"]
        close = {"rtol": 1e-4, "atol": 1e-5}
        np.testing.assert_allclose(records["sigma"], logit_std(logits)[index].numpy(), **close)
        np.testing.assert_allclose(records["teacher_T"], expected.teacher[index].numpy(), **close)
        np.testing.assert_allclose(records["student_T"], expected.student[index].numpy(), **close)
        np.testing.assert_allclose(records["alpha"], expected.alpha[index].numpy(), **close)
        np.testing.assert_allclose(records["kd_weight"], expected.kd_weight[index].numpy(), **close)
        np.testing.assert_allclose(records["ce_weight"], expected.ce_weight[index].numpy(), **close)
        teacher_correct = (logits.argmax(-1) == train_set.labels)[index].numpy()
        np.testing.assert_array_equal(records["teacher_correct"], teacher_correct)
        assert np.isfinite(records["kd"]).all() and (records["kd"] >= -1e-6).all()
        assert np.isfinite(records["ce"]).all() and (records["ce"] >= 0).all()


def test_saved_config_has_the_callback_on(tals_run):
    config = yaml.safe_load((tals_run / "config.yaml").read_text())
    assert config["per_sample_statistics"]["class_path"] == "callbacks.PerSampleStatistics"
    assert config["per_sample_statistics"]["init_args"]["every_n_steps"] == EVERY_N_STEPS
    assert config["temperature_monitor"]["class_path"] == "callbacks.TemperatureMonitor"


# -- every column, against the module, with a student that does not move ---------------------------
def test_every_column_matches_the_module_on_the_same_samples(tmp_path):
    """lr = 0 keeps the student fixed, so the student-dependent columns (kd, ce, student T and
    correctness) can be recomputed too; 5 of 21 batches: one row per sample *seen*."""
    seed_everything(0)
    module = DistillationModule(optimizer=partial(torch.optim.SGD, lr=0.0))
    data = DigitsDataModule(batch_size=64)
    trainer = Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=5, limit_val_batches=0, num_sanity_val_steps=0,
        logger=TensorBoardLogger(tmp_path, name="frozen", version="v", default_hp_metric=False),
        callbacks=[PerSampleStatistics(every_n_steps=2)], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, data)
    records = read_records(tmp_path / "frozen" / "v")
    assert len(records["index"]) == 5 * 64 == len(np.unique(records["index"]))
    index = torch.as_tensor(records["index"])
    dataset = data.datasets["train"]
    images, labels = dataset.images[index], dataset.labels[index]
    module.eval()
    with torch.no_grad():
        _, expected = module.distillation_loss(module(images), module.teacher_logits(images), labels, epoch=1)
    expected["index"] = index
    assert set(expected) == set(PER_SAMPLE_FIELDS) == set(BUFFER_COLUMNS) - {"step"}
    for name in PER_SAMPLE_FIELDS:
        np.testing.assert_allclose(records[name], expected[name].numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    # Steps 0..4, 64 samples each; windows at global steps 2 and 4 (tagged 1 and 3), epoch end at 4.
    assert np.bincount(records["step"]).tolist() == [64] * 5
    accumulator = events(tmp_path / "frozen" / "v")
    assert [event.step for event in accumulator.Histograms("per_sample/alpha")] == [1, 3]
    assert [event.histogram_value.num for event in accumulator.Histograms("per_sample/alpha")] == [128, 128]
    assert [event.step for event in accumulator.Histograms("per_sample_epoch/alpha")] == [4]


def test_step_column_under_gradient_accumulation(tmp_path):
    """A batch's ``step`` is the global step it trained at, taken from the previous batch's end: with two batches
    per optimizer step, batches 0-1 train at step 0, 2-3 at step 1, ... (checked against the trainer itself)."""

    class BatchStarts(Callback):
        def __init__(self):
            self.steps = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.steps.append((trainer.global_step, batch[2].clone()))

    seed_everything(0)
    starts = BatchStarts()
    trainer = Trainer(
        accelerator="cpu", max_epochs=2, limit_train_batches=5, limit_val_batches=0, num_sanity_val_steps=0,
        accumulate_grad_batches=2, logger=TensorBoardLogger(tmp_path, name="acc", version="v", default_hp_metric=False),
        callbacks=[PerSampleStatistics(every_n_steps=2), starts], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(DistillationModule(), DigitsDataModule(batch_size=64))
    for epoch in range(2):
        expected = {}
        for step, index in starts.steps[5 * epoch : 5 * epoch + 5]:
            expected.update(dict.fromkeys(index.tolist(), step))
        records = read_records(tmp_path / "acc" / "v", epochs=[epoch])
        assert len(records["index"]) == len(expected) == 5 * 64
        assert records["step"].tolist() == [expected[index] for index in records["index"].tolist()], epoch
    assert sorted({step for step, _ in starts.steps}) == [0, 1, 2, 3, 4, 5]  # 3 optimizer steps an epoch (2, 2, 1)


# -- CE-only runs and switching off -----------------------------------------------------------------
def test_cross_entropy_only_runs_are_left_alone(tmp_path):
    seed_everything(0)
    trainer = Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0,
        logger=TensorBoardLogger(tmp_path, name="ce", version="v", default_hp_metric=False),
        callbacks=[PerSampleStatistics(every_n_steps=1), TemperatureMonitor()], log_every_n_steps=1,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(DistillationModule(teacher=None), DigitsDataModule(batch_size=64))
    assert trainer.state.finished
    assert not record_files(tmp_path / "ce" / "v")
    tags = events(tmp_path / "ce" / "v").Tags()
    assert not tags["histograms"]
    assert not [tag for tag in tags["scalars"] if tag.startswith(("per_sample", "temperature/", "ctkd/"))]
    assert "train/loss" in tags["scalars"]


def test_switched_off_from_the_command_line(tmp_path):
    cli = run_cli(tmp_path, "--per_sample_statistics=null", "--temperature_monitor=null")
    names = [type(callback).__name__ for callback in cli.trainer.callbacks]
    assert "PerSampleStatistics" not in names and "TemperatureMonitor" not in names
    run = Path(cli.trainer.log_dir)
    assert not (run / "per_sample").exists()
    tags = events(run).Tags()
    assert not tags["histograms"]
    assert not [tag for tag in tags["scalars"] if tag.startswith(("per_sample", "temperature/", "final/"))]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["per_sample_statistics"] is None and config["temperature_monitor"] is None


def test_configured_from_the_command_line():
    from distill.cli import cli_main

    cli = cli_main([*config_args(DEFAULT_CONFIG), "--per_sample_statistics.every_n_steps=7"], run=False)
    (callback,) = [callback for callback in cli.trainer.callbacks if isinstance(callback, PerSampleStatistics)]
    assert callback.every_n_steps == 7
    assert sum(isinstance(callback, TemperatureMonitor) for callback in cli.trainer.callbacks) == 1


# -- pieces -------------------------------------------------------------------------------------------
def test_deduplicate_keeps_the_first_occurrence_sorted_by_index():
    columns = {"index": np.array([3, 1, 2, 3, 1]), "step": np.array([0, 0, 1, 1, 2])}  # padding repeats come last
    kept = deduplicate(columns)
    assert kept["index"].tolist() == [1, 2, 3]
    assert kept["step"].tolist() == [0, 1, 0]
    unique = {"index": np.array([4, 0, 2]), "step": np.array([5, 6, 7])}
    assert {name: column.tolist() for name, column in deduplicate(unique).items()} == {"index": [0, 2, 4], "step": [6, 7, 5]}
    # Both ways of sorting (a table of first positions for small indices, argsort for sparse ones) agree.
    generator = np.random.default_rng(0)
    for high in (50, 10**9):
        index = generator.integers(0, high, 300)
        columns = {"index": index, "row": np.arange(300)}
        kept = deduplicate(columns)
        distinct, first = np.unique(index, return_index=True)
        assert kept["index"].tolist() == distinct.tolist() and kept["row"].tolist() == first.tolist()
    assert deduplicate({"index": np.array([-3, 5, -3]), "row": np.arange(3)})["row"].tolist() == [0, 1]
    assert deduplicate({"index": np.empty(0, np.int64)})["index"].tolist() == []


def test_records_are_written_atomically_and_read_in_one_call(tmp_path):
    columns = {name: np.arange(4).astype(dtype) for name, dtype in RECORD_COLUMNS.items()}
    path = write_records(record_path(tmp_path, 3), columns)
    assert path == tmp_path / "per_sample" / "epoch_0003.npy"
    assert [p.name for p in path.parent.iterdir()] == ["epoch_0003.npy"]  # no temporary left
    assert {name: array.tolist() for name, array in read_epoch(path).items()} == {
        name: array.tolist() for name, array in columns.items()
    }
    with pytest.raises(ValueError, match="missing"):
        write_records(tmp_path / "x.npy", {"index": np.arange(2)})
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "nowhere")


def test_histograms_keep_count_range_and_moments():
    values = np.stack([np.linspace(0, 1, 101), np.full(101, 2.0), np.r_[np.arange(100.0), np.nan]], axis=1)
    first, constant, with_nan = histogram_protos(values, bins=10)
    assert (first.num, first.min, first.max, sum(first.bucket)) == (101, 0.0, 1.0, 101)
    assert np.allclose(first.bucket_limit, np.linspace(0.1, 1.0, 10))
    reference, _ = np.histogram(values[:, 0], bins=10)  # up to rounding at the bucket edges
    assert np.abs(np.asarray(first.bucket) - reference).max() <= 1
    assert np.isclose(first.sum, values[:, 0].sum()) and np.isclose(first.sum_squares, (values[:, 0] ** 2).sum())
    assert (constant.num, constant.min, constant.max) == (101, 2.0, 2.0)
    assert (constant.bucket, constant.bucket_limit) == ([101], [2.0])  # one bucket
    assert (with_nan.num, with_nan.max, sum(with_nan.bucket)) == (100, 99.0, 100)


def test_fast_checksum_writes_the_same_bytes_as_tensorboards_own(tmp_path):
    """distill.tensorboard_summary replaces TensorBoard's pure-Python CRC-32C by a C one: same values."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as python_crc

    from distill.tensorboard_summary import build_summary, masked_crc32c

    summary = build_summary({"a": np.linspace(0, 1, 100)}, {"b": 0.5}).SerializeToString()
    for data in (b"", b"abc", bytes(range(256)) * 7, summary):
        assert masked_crc32c(data) == python_crc(data)
