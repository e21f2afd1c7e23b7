"""``TemperatureMonitor``: T_i scalars and the policy's own state at every logging step, checked
against the raw records of the same run, and the HPARAMS entry with the final metrics."""

from __future__ import annotations

from argparse import Namespace

import numpy as np
import pytest
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from callbacks import read_records
from callbacks.temperature_monitor import final_metrics, flatten_hparams
from distill.policies import CurriculumTemperature, cosine_ramp
from tests.per_sample_runs import ctkd_run, events, steps_per_epoch, tals_run  # noqa: F401

EPOCHS = 2
T_TAGS = [f"temperature/{side}_T_{stat}" for side in ("teacher", "student") for stat in ("mean", "min", "max")]


@pytest.fixture(scope="module")
def train_size(digits) -> int:
    return len(digits.datasets["train"])


def _scalars(accumulator, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in accumulator.Scalars(tag)}


def test_batch_temperatures_at_every_logging_step(tals_run, train_size):
    """SHORT_RUN logs every step: one value per training step, equal to the batch's records."""
    accumulator = events(tals_run)
    steps = list(range(EPOCHS * steps_per_epoch(train_size)))
    for tag in T_TAGS:
        assert sorted(_scalars(accumulator, tag)) == steps, tag
    records = read_records(tals_run)
    mean, low, high = (_scalars(accumulator, f"temperature/teacher_T_{stat}") for stat in ("mean", "min", "max"))
    for step in steps:
        batch = records["teacher_T"][records["step"] == step]
        assert mean[step] == pytest.approx(batch.mean(), rel=1e-5)
        assert (low[step], high[step]) == pytest.approx((batch.min(), batch.max()), rel=1e-6)
    assert all(high[step] > low[step] for step in steps)  # a per-sample policy spreads T_i


def test_policy_state_is_logged(ctkd_run, train_size):
    accumulator = events(ctkd_run)
    keys = set(CurriculumTemperature().monitored_state())
    assert keys and keys <= set(accumulator.Tags()["scalars"])
    per_epoch = steps_per_epoch(train_size)
    lambdas = _scalars(accumulator, "ctkd/lambda")
    assert sorted(lambdas) == list(range(EPOCHS * per_epoch))
    for step, value in lambdas.items():
        assert value == pytest.approx(cosine_ramp(step // per_epoch + 1, 10))
    # Global CTKD: one learned T for the batch, the one its per-sample T_i all share.
    learned = _scalars(accumulator, "ctkd/temperature")
    low, high = _scalars(accumulator, "temperature/teacher_T_min"), _scalars(accumulator, "temperature/teacher_T_max")
    for step, value in learned.items():
        assert low[step] == pytest.approx(value, rel=1e-5) and high[step] == pytest.approx(value, rel=1e-5)
    assert 1.0 < min(learned.values()) and max(learned.values()) < 21.0


def test_hparams_tab_has_the_run_and_its_final_metrics(ctkd_run, train_size):
    accumulator = events(ctkd_run)
    content = accumulator.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hparams = {key: value.string_value or value.number_value for key, value in start.hparams.items()}
    assert hparams["temperature_policy"] == "CurriculumTemperature"
    assert hparams["temperature_policy/mode"] == "global"
    assert hparams["student"] == "mlp_small" and hparams["teacher"] == "digits_cnn"
    assert hparams["data"] == "DigitsDataModule" and hparams["trainer/max_epochs"] == EPOCHS
    assert hparams["optimizer"] == "SGD" and hparams["optimizer/lr"] == pytest.approx(0.1)
    assert not [key for key in hparams if key.startswith("_")]
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metrics = {info.name.tag for info in experiment.metric_infos}
    assert {"final/val/acc1", "final/test/acc1", "final/test/teacher_acc1"} <= metrics
    for metric in ("test/acc1", "val/acc1", "test/teacher_acc1"):
        (final,) = accumulator.Scalars(f"final/{metric}")  # once, at the last step
        assert final.value == pytest.approx(accumulator.Scalars(metric)[-1].value)
        assert final.step == EPOCHS * steps_per_epoch(train_size)  # the global step at the end
    # One HPARAMS session per run: TensorBoard keeps the first and ignores later ones.
    assert _count_events_with_tag(ctkd_run, "_hparams_/session_start_info") == 1


def _count_events_with_tag(run_dir, tag: str) -> int:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return sum(
        any(value.tag == tag for value in event.summary.value)
        for path in sorted(run_dir.glob("events.out.tfevents.*"))
        for event in EventFileLoader(str(path)).Load()
    )


def test_flatten_hparams_gives_scalars_and_strings():
    nested = {
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
        "student": "mlp_small",
        "teacher": None,
        "input_shape": (1, 8, 8),
        "temperature_policy": Namespace(
            class_path="distill.policies.FixedTemperature", init_args=Namespace(temperature=4.0)
        ),
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "nesterov": False}},
        "divergence": {"class_path": "distill.divergences.KL"},
    }
    assert flatten_hparams(nested) == {
        "student": "mlp_small",
        "teacher": "None",
        "input_shape": "(1, 8, 8)",
        "temperature_policy": "FixedTemperature",
        "temperature_policy/temperature": 4.0,
        "optimizer": "SGD",
        "optimizer/lr": 0.05,
        "optimizer/nesterov": False,
        "divergence": "KL",
    }


def test_final_metrics_keep_scalar_val_and_test_entries():
    metrics = {"val/acc1": np.float32(0.5), "test/loss": 1.25, "train/loss": 3.0, "epoch": 1}
    assert final_metrics(metrics) == {"final/val/acc1": 0.5, "final/test/loss": 1.25}
    assert final_metrics(metrics, stages=("test/",)) == {"final/test/loss": 1.25}
