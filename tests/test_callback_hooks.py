"""``skip_unused_hooks``: Lightning finds only a callback's own hooks, and still calls all of them."""

from __future__ import annotations

import lightning as L
import pytest

from callbacks import PerSampleStatistics, TemperatureMonitor
from distill.callback_hooks import CALLED_DIRECTLY, HOOKS, skip_unused_hooks
from distill.data import DigitsDataModule
from distill.module import DistillationModule, HandOverOnException
from distill.preemption import Preemption


@skip_unused_hooks
class Counter(L.Callback):
    def __init__(self):
        self.calls: dict[str, int] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.calls["on_train_batch_end"] = self.calls.get("on_train_batch_end", 0) + 1

    def on_validation_epoch_end(self, trainer, pl_module):
        self.calls["on_validation_epoch_end"] = self.calls.get("on_validation_epoch_end", 0) + 1

    def state_dict(self):
        return {"calls": dict(self.calls)}


class Later(Counter):  # a subclass can still define a hook its base left out
    def on_after_backward(self, trainer, pl_module):
        self.calls["on_after_backward"] = self.calls.get("on_after_backward", 0) + 1


def test_only_the_hooks_a_class_leaves_out_become_none():
    assert Counter.on_train_batch_start is None and Counter.on_before_backward is None and Counter.setup is None
    assert callable(Counter.on_train_batch_end) and callable(Counter.on_validation_epoch_end)
    for name in CALLED_DIRECTLY:  # Lightning calls these without asking whether they are callable
        assert callable(getattr(Counter, name))
    assert "on_train_batch_end" in HOOKS and "state_dict" not in HOOKS and "on_save_checkpoint" not in HOOKS
    assert L.Callback.on_train_batch_start is not None  # the base class is untouched


@pytest.mark.parametrize("callback", [PerSampleStatistics, TemperatureMonitor, HandOverOnException, Preemption])
def test_the_projects_callbacks_leave_out_the_no_op_hooks(callback):
    assert callback.on_before_backward is None and callback.on_validation_batch_end is None
    own = [name for name in HOOKS if getattr(callback, name) is not None]
    assert own and all(getattr(callback, name) is not getattr(L.Callback, name) for name in own)


def test_lightning_calls_every_own_hook_and_skips_the_rest(tmp_path):
    counter, later = Counter(), Later()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
                        callbacks=[counter, later], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(DistillationModule(), DigitsDataModule(batch_size=16))
    assert counter.calls == {"on_train_batch_end": 6, "on_validation_epoch_end": 2}
    assert later.calls == {"on_train_batch_end": 6, "on_validation_epoch_end": 2, "on_after_backward": 6}
