"""A non-finite loss or teacher logit stops training with the step and sample indices, before it reaches a
checkpoint (the newest checkpoint predates it and stays intact), with no host sync in the training step.

The data: the real digits training split in order (no shuffle), one image poisoned with NaN. Sample 323 is the
4th of the 6th batch of 64: it is trained at step 5 (0-based) of epoch 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from distill.data import DigitsDataModule, IndexedTensorDataset
from distill.errors import DistillError
from distill.module import DistillationModule
from distill.nonfinite import NonFiniteWatch
from distill.run_folder import newest_checkpoint

POISONED = 323
POISONED_STEP = 5


class PoisonedDigits(L.LightningDataModule):
    """Digits' training split in order, with ``poisoned``'s image set to NaN; ``train_inputs`` (the teacher-logit
    cache) only when ``cache``."""

    num_classes = 10
    input_shape = [1, 8, 8]
    has_random_augmentation = False

    def __init__(self, poisoned: int = POISONED, cache: bool = False):
        super().__init__()
        digits = DigitsDataModule()
        digits.setup("fit")
        images = digits.datasets["train"].images.clone()
        images[poisoned] = float("nan")
        self.train = IndexedTensorDataset(images, digits.datasets["train"].labels)
        if cache:
            self.train_inputs = lambda: images

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=64, shuffle=False)


def fit(tmp_path: Path, module: DistillationModule, data: L.LightningDataModule, every_n_steps: int | None,
        log_every: int) -> str:  # fmt: skip
    """Train until the error (its message); a step checkpoint every ``every_n_steps`` steps (all kept) into
    ``<tmp>/run/checkpoints``."""
    callbacks = [] if every_n_steps is None else [
        ModelCheckpoint(dirpath=tmp_path / "run" / "checkpoints", every_n_train_steps=every_n_steps, save_top_k=-1,
                        filename="{step}")  # fmt: skip
    ]
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / "hparams.yaml").write_text("{}\n")  # a run folder, as a logger would make it
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=log_every,
        logger=False, enable_checkpointing=every_n_steps is not None, callbacks=callbacks, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    with pytest.raises(DistillError) as error:
        trainer.fit(module, data)
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("teacher", [None, "digits_cnn"], ids=["loss", "teacher logits"])
def test_stops_before_the_next_checkpoint_which_stays_intact(tmp_path, teacher):
    torch.manual_seed(0)
    module = DistillationModule(teacher=teacher, teacher_cache=False)
    message = fit(tmp_path, module, PoisonedDigits(), every_n_steps=2, log_every=50)
    what = "loss" if teacher is None else "teacher logits"
    # Checkpoints after steps 1 and 3 (global steps 2, 4); the one after step 5 is refused.
    newest = tmp_path / "run" / "checkpoints" / "step=4.ckpt"
    assert message.startswith(
        f"non-finite {what} at training step {POISONED_STEP} (epoch 0), training samples [{POISONED}]; "
        f"the newest checkpoint, {newest}, was written before it and is intact"
    ), message
    assert newest_checkpoint([tmp_path / "run"]) == newest
    assert sorted(path.name for path in newest.parent.iterdir()) == ["step=2.ckpt", "step=4.ckpt"]
    weights = torch.load(newest, weights_only=True)["state_dict"]
    assert all(torch.isfinite(value).all() for value in weights.values())


def test_stops_at_the_logging_interval_without_checkpoints(tmp_path):
    module = DistillationModule(teacher=None)
    message = fit(tmp_path, module, PoisonedDigits(), every_n_steps=None, log_every=4)
    # Checked after steps 3 and 7: the second check finds step 5.
    expected = f"non-finite loss at training step {POISONED_STEP} (epoch 0), training samples [{POISONED}]"
    assert message.startswith(f"{expected}; no checkpoint was written after it")


def test_cached_teacher_logits_are_checked_before_training(tmp_path):
    module = DistillationModule(teacher="digits_cnn")
    message = fit(tmp_path, module, PoisonedDigits(cache=True), every_n_steps=1, log_every=50)
    assert message.startswith(f"model.teacher: the teacher gives non-finite logits for training samples [{POISONED}] "
                              "(found when its logits were cached, before training)")  # fmt: skip
    assert module.global_step == 0 and not list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))


def test_watch_reports_the_first_bad_step_and_all_its_samples():
    watch = NonFiniteWatch()
    finite = torch.ones(4)
    watch.add(7, 1, torch.tensor([10, 11, 12, 13]), finite)
    loss = torch.tensor([1.0, float("inf"), 1.0, float("nan")])
    watch.add(8, 1, torch.tensor([20, 21, 22, 23]), loss)
    watch.add(9, 1, torch.tensor([30, 31, 32, 33]), torch.full((4,), float("nan")))
    assert int(watch.any_bad(torch.device("cpu"))) == 1
    failure = watch.first_bad()
    assert (failure.step, failure.epoch, failure.what, failure.samples) == (8, 1, "loss", [21, 23])
    # A weight of 0 does not hide a non-finite divergence: 0 * inf is nan, as in the loss itself.
    watch.clear()
    sigma = torch.tensor([1.0, float("nan"), 1.0, 1.0])
    watch.add(3, 0, torch.arange(4), finite, finite, finite, torch.zeros(4), sigma)
    assert watch.first_bad().what == "teacher logits" and watch.first_bad().samples == [1]
    watch.clear()
    assert int(watch.any_bad(torch.device("cpu"))) == 0 and watch.first_bad() is None


def reference_first_bad(steps):
    """Independent reference: each sample's loss in Python floats, step by step, as the docstring defines it."""
    for step, (index, ce, kd, ce_weight, kd_weight, sigma, loss) in enumerate(steps):
        teacher = [i for i, s in zip(index, sigma) if not math.isfinite(s)] if kd is not None else []
        if teacher:
            return step, "teacher logits", sorted(teacher)
        losses = ce if kd is None else [w * c + v * k for c, k, w, v in zip(ce, kd, ce_weight, kd_weight)]
        bad = [i for i, value in zip(index, losses) if not math.isfinite(value)]
        if bad:
            return step, "loss", sorted(bad)
        if loss is not None and not math.isfinite(loss):
            return step, "loss", sorted(index)
    return None


@pytest.mark.parametrize("distilled", [True, False, "mixed"])
def test_watch_checks_all_steps_at_once_as_each_step_alone(distilled):
    """``any_bad`` and ``first_bad`` read all kept steps together: for random runs of steps with a non-finite value
    here and there (a sample's CE or KD, a zero weight beside an inf, a teacher std, a step loss only), they must
    agree with a step-by-step reference in Python floats."""
    generator = torch.Generator().manual_seed(0)
    special = [float("nan"), float("inf"), -float("inf")]
    for trial in range(60):
        watch, steps = NonFiniteWatch(), []
        for step in range(int(torch.randint(1, 7, (), generator=generator))):
            size = int(torch.randint(1, 6, (), generator=generator))
            values = [torch.rand(size, generator=generator) for _ in range(5)]
            values[2] = values[2] * (torch.rand(size, generator=generator) > 0.3)  # some zero CE weights
            if torch.rand((), generator=generator) < 0.25:  # poison one value of one column
                column = int(torch.randint(0, 5, (), generator=generator))
                row = int(torch.randint(0, size, (), generator=generator))
                values[column][row] = special[int(torch.randint(0, 3, (), generator=generator))]
            ce, kd, ce_weight, kd_weight, sigma = values
            loss = (ce_weight * ce + kd_weight * kd).mean()
            if torch.rand((), generator=generator) < 0.1:
                loss = torch.tensor(float("nan"))  # a composed method's extra term
            index = torch.arange(step * 10, step * 10 + size)
            with_kd = distilled is True or (distilled == "mixed" and step % 2 == 0)
            if not with_kd:
                kd = ce_weight = kd_weight = sigma = None
                loss = ce.mean() if loss.isfinite() else loss
            watch.add(step, 0, index, ce, kd, ce_weight, kd_weight, sigma, loss=loss)
            as_list = lambda tensor: None if tensor is None else tensor.tolist()  # noqa: E731
            steps.append((index.tolist(), ce.tolist(), as_list(kd), as_list(ce_weight), as_list(kd_weight),
                          as_list(sigma), float(loss)))  # fmt: skip
        expected = reference_first_bad(steps)
        assert int(watch.any_bad(torch.device("cpu"))) == (expected is not None), trial
        failure = watch.first_bad()
        assert (None if failure is None else (failure.step, failure.what, failure.samples)) == expected, trial
