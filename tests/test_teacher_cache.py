"""The teacher-logit cache: filled once at the start of fit where training batches are deterministic,
equal to the live teacher, read by sample index, never checkpointed, refused where batches are augmented."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from distill.data import DigitsDataModule
from distill.errors import DistillError
from distill.module import DistillationModule
from distill.policies import FixedTemperature


class RandomlyAugmentedDigits(DigitsDataModule):
    """Digits that declare random augmentation (as CIFAR's training batches are)."""

    has_random_augmentation = True


def fit(module: DistillationModule, data: L.LightningDataModule, tmp_path, steps: int = 4, **trainer_args) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, **trainer_args,
    )  # fmt: skip
    trainer.fit(module, data)
    return trainer


def student_after(tmp_path, teacher_cache: bool | None, steps: int = 6) -> dict[str, torch.Tensor]:
    L.seed_everything(0, verbose=False)
    module = DistillationModule(temperature_policy=FixedTemperature(), teacher_cache=teacher_cache)
    fit(module, DigitsDataModule(batch_size=32), tmp_path, steps=steps, enable_checkpointing=False)
    return {name: value.detach().clone() for name, value in module.student.state_dict().items()}


def test_cache_holds_the_live_teacher_logits_of_every_training_sample(tmp_path):
    module = DistillationModule(temperature_policy=FixedTemperature())
    data = DigitsDataModule(batch_size=32)
    fit(module, data, tmp_path, steps=1, enable_checkpointing=False)
    cached = module.cached_teacher_logits
    images = data.train_inputs()
    assert cached is not None and cached.shape == (len(images), 10)
    # Live logits batch by batch, as the training step would compute them without the cache.
    live = torch.cat([module.teacher_logits(batch) for batch in images.split(32)])
    torch.testing.assert_close(cached, live, rtol=1e-5, atol=1e-5)
    assert not cached.requires_grad


def test_training_with_the_cache_equals_training_without_it(tmp_path):
    with_cache = student_after(tmp_path / "on", teacher_cache=None)
    without = student_after(tmp_path / "off", teacher_cache=False)
    for name in with_cache:
        torch.testing.assert_close(with_cache[name], without[name], rtol=1e-4, atol=1e-5)


def test_the_step_reads_the_cache_not_the_teacher(tmp_path, monkeypatch):
    module = DistillationModule(temperature_policy=FixedTemperature())
    calls = []
    original = module.teacher.forward
    monkeypatch.setattr(module.teacher, "forward", lambda images: calls.append(len(images)) or original(images))
    fit(module, DigitsDataModule(batch_size=32), tmp_path, steps=5, enable_checkpointing=False)
    # Only the cache fill ran the teacher: one pass in chunks over the training set, none in the 5 steps.
    assert sum(calls) == len(DigitsDataModule().train_inputs())


def test_cache_is_never_written_into_a_checkpoint(tmp_path):
    module = DistillationModule(temperature_policy=FixedTemperature())
    trainer = fit(module, DigitsDataModule(batch_size=32), tmp_path, steps=2)
    assert module.cached_teacher_logits is not None
    path = tmp_path / "manual.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert not [key for key in state if "cached" in key or key.startswith("teacher.")]


def test_off_where_batches_are_augmented_and_refused_when_required(tmp_path):
    module = DistillationModule(temperature_policy=FixedTemperature())
    fit(module, RandomlyAugmentedDigits(batch_size=32), tmp_path, steps=1, enable_checkpointing=False)
    assert module.cached_teacher_logits is None  # auto: the teacher runs on every batch
    required = DistillationModule(temperature_policy=FixedTemperature(), teacher_cache=True)
    with pytest.raises(DistillError, match=r"model\.teacher_cache=true: RandomlyAugmentedDigits augments"):
        fit(required, RandomlyAugmentedDigits(batch_size=32), tmp_path, steps=1, enable_checkpointing=False)


def test_switched_off_runs_the_teacher_every_step(tmp_path):
    module = DistillationModule(temperature_policy=FixedTemperature(), teacher_cache=False)
    fit(module, DigitsDataModule(batch_size=32), tmp_path, steps=1, enable_checkpointing=False)
    assert module.cached_teacher_logits is None
