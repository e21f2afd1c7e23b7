"""Training scalars are accumulated on the device and published once per logging interval: the values
written are the window's means, at Lightning's steps, into TensorBoard, the progress bar and
``callback_metrics``."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger

from distill.data import DigitsDataModule
from distill.module import DistillationModule
from distill.policies import FixedTemperature
from distill.train_metrics import TrainMetricWindow


class MemoryLogger(Logger):
    """Keeps every ``log_metrics`` call."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self):
        return "memory"

    @property
    def version(self):
        return 0

    def log_metrics(self, metrics, step=None):
        self.calls.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


class StepRecorder(L.Callback):
    """Each step's loss, CE part, student logits and labels, recomputed from the step's outputs."""

    def __init__(self):
        self.rows: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        per_sample = outputs["per_sample"]
        self.rows.append({
            "loss": outputs["loss"].detach(),
            "loss_ce": (per_sample["ce_weight"] * per_sample["ce"]).mean(),
            "correct": per_sample["student_correct"].float().sum(),
            "samples": torch.tensor(float(len(per_sample["label"]))),
        })  # fmt: skip


@pytest.mark.parametrize("every", [1, 3])
def test_logged_values_are_the_window_means_at_lightnings_steps(tmp_path, every):
    L.seed_everything(0, verbose=False)
    logger, recorder = MemoryLogger(), StepRecorder()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=7, log_every_n_steps=every, limit_val_batches=0, num_sanity_val_steps=0,
        logger=logger, callbacks=[recorder], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    module = DistillationModule(temperature_policy=FixedTemperature())
    trainer.fit(module, DigitsDataModule(batch_size=32))
    written = [(step, values) for step, values in logger.calls if "train/loss" in values]
    # Windows end at steps every-1, 2*every-1, ...; the last partial window is written at the epoch's end
    # (7 steps is less than one digits epoch of 41 batches of 32, so here: at the end of fit).
    ends = [step for step in range(7) if (step + 1) % every == 0]
    ends += [6] if 6 not in ends else []
    assert [step for step, _ in written] == ends
    start = 0
    for end, (_, values) in zip(ends, written):
        rows = recorder.rows[start : end + 1]
        assert values["train/loss"] == pytest.approx(float(torch.stack([r["loss"] for r in rows]).mean()), rel=1e-5)
        assert values["train/loss_ce"] == pytest.approx(float(torch.stack([r["loss_ce"] for r in rows]).mean()), rel=1e-5)
        correct = float(sum(r["correct"] for r in rows))
        samples = float(sum(r["samples"] for r in rows))
        assert values["train/acc1"] == pytest.approx(correct / samples, rel=1e-6)
        assert values["train/loss_kd"] == pytest.approx(values["train/loss"] - values["train/loss_ce"], abs=1e-5)
        start = end + 1
    assert trainer.progress_bar_metrics["train/loss"] == pytest.approx(written[-1][1]["train/loss"])
    assert float(trainer.callback_metrics["train/acc1"]) == pytest.approx(written[-1][1]["train/acc1"])


def test_window_averages_losses_over_steps_and_accuracy_over_samples_and_resets():
    window = TrainMetricWindow(extra_names=("stone_1_loss",))
    window.add(torch.tensor(1.0), torch.tensor(0.5), torch.tensor(3), 4, {"stone_1_loss": torch.tensor(2.0)})
    window.add(torch.tensor(3.0), torch.tensor(0.5), torch.tensor(1), 6, {"stone_1_loss": torch.tensor(4.0)})
    means = window.pop_means()
    assert means["loss"] == 2.0 and means["loss_ce"] == 0.5 and means["loss_kd"] == 1.5
    assert means["acc1"] == pytest.approx(4 / 10) and means["stone_1_loss"] == 3.0
    assert window.steps_since_pop == 0 and window.samples_since_pop == 0 and window.sums() == [0.0] * 5
    assert window.pop_means() == {"loss": 0.0, "loss_ce": 0.0, "loss_kd": 0.0, "acc1": 0.0, "stone_1_loss": 0.0}


def test_window_counts_stay_exact_beside_bf16_losses_and_keep_no_autograd_graph():
    """bf16 holds integers exactly only up to 256: a count stacked with bf16 losses must not be rounded. The window
    keeps detached values, so a step's graph is freed with the step."""
    weight = torch.ones((), requires_grad=True)
    window = TrainMetricWindow()
    for correct in (301, 301):
        loss = (weight * 1.5).bfloat16()
        window.add(loss, (weight * 0.5).bfloat16(), torch.tensor(correct), 512)
    assert all(not value.requires_grad for value in window._losses)
    means = window.pop_means()
    assert means["acc1"] == 602 / 1024  # bf16 rounds 301 to 300
    assert means["loss"] == 1.5 and means["loss_ce"] == 0.5 and means["loss_kd"] == 1.0


def test_window_sums_in_float64_what_float32_would_round():
    """Many float32 steps summed in float64: the mean equals numpy's float64 mean of the same float32 values."""
    generator = torch.Generator().manual_seed(0)
    losses = torch.rand(500, generator=generator, dtype=torch.float32) * 1e4
    window = TrainMetricWindow()
    for value in losses:
        window.add(value, value / 3, torch.tensor(1), 1)
    means = window.pop_means()
    expected = losses.double()
    assert means["loss"] == pytest.approx(float(expected.mean()), rel=1e-15)
    assert means["loss_kd"] == pytest.approx(float((expected - (losses / 3).double()).mean()), rel=1e-12)


class StopAt(L.Callback):
    """Raises ``exception`` at one training step, as a crash or a preemption (SystemExit) would."""

    def __init__(self, step: int, exception: type[BaseException]):
        self.step, self.exception = step, exception

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise self.exception("stop")


@pytest.mark.parametrize("exception", [RuntimeError, SystemExit])
def test_held_training_scalars_reach_the_loggers_when_fit_ends_in_an_exception(tmp_path, exception):
    """Scalars wait in ``PendingScalars`` (up to 10 s); a fit that fails or exits (a preemption raises SystemExit)
    still hands over every window logged before it stopped."""
    L.seed_everything(0, verbose=False)
    logger = MemoryLogger()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=3, log_every_n_steps=2, logger=logger, callbacks=[StopAt(9, exception)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        default_root_dir=tmp_path,
    )  # fmt: skip
    with pytest.raises(exception):
        trainer.fit(DistillationModule(teacher="digits_cnn"), DigitsDataModule(batch_size=64))
    steps = [step for step, metrics in logger.calls if "train/loss" in metrics]
    assert steps == [1, 3, 5, 7]  # the windows that ended before step 9's batch (steps 1, 3, 5, 7; 9 did not publish)
