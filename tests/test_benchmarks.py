"""`make bench`'s runner in its tiny mode: every benchmark's code path runs once and the report files are
written with every figure (timings are never asserted)."""

from __future__ import annotations

import json

import lightning as L
import pytest

from benchmarks import run


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tiny_run_writes_the_json_and_the_markdown(tmp_path):
    assert run.main(["--mode", "tiny", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "benchmarks.json").read_text())
    keys = {figure["key"] for figure in results["figures"]}
    assert {"framework.digits_logging", "framework.plain_loop", "per_sample.both", "per_sample.both_fashion_mnist",
            "per_sample.collection", "per_sample.collection_fashion_mnist",
            "gpu.images_per_second", "blockkd.digits_cnn_small.blockkd", "data.cifar_loader",
            "data.teacher_cache_fashion_mnist"} <= keys
    assert any(key.startswith("policy.") and key.endswith(".cifar_step") for key in keys)
    for figure in results["figures"]:
        assert figure["setup"] and figure["variants"], figure["key"]
        if figure["bound"] is not None:
            assert figure["within_bound"] == (figure["value"] <= figure["bound"])
        if figure["at_least"] is not None:
            assert figure["within_bound"] == (figure["value"] >= figure["at_least"])
    assert results["environment"]["torch"] and results["mode"] == "tiny"
    report = (tmp_path / "benchmarks.md").read_text()
    assert all(f"`{key}`" in report for key in keys)


class HookLog(L.Callback):
    """Records ``(hook, epoch)`` for the hooks it overrides; the others stay ``Callback``'s no-ops."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    def setup(self, trainer, pl_module, stage):
        self.calls.append(("setup", -1))

    def on_train_start(self, trainer, pl_module):
        self.calls.append(("on_train_start", trainer.current_epoch))

    def on_train_epoch_start(self, trainer, pl_module):
        self.calls.append(("on_train_epoch_start", trainer.current_epoch))

    def on_before_backward(self, trainer, pl_module, loss):
        self.calls.append(("on_before_backward", trainer.current_epoch))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.calls.append(("on_train_batch_end", trainer.current_epoch))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.calls.append(("on_validation_batch_end", trainer.current_epoch))

    def on_train_epoch_end(self, trainer, pl_module):
        self.calls.append(("on_train_epoch_end", trainer.current_epoch))

    def on_train_end(self, trainer, pl_module):
        self.calls.append(("on_train_end", trainer.current_epoch))


def test_epoch_gate_runs_a_callbacks_epoch_hooks_only_in_its_epochs_and_leaves_no_hook_in_the_others(tmp_path):
    from benchmarks.per_sample_overhead import EPOCH_HOOKS, EpochGate
    from distill.data import DigitsDataModule
    from distill.module import DistillationModule

    recorder = HookLog()
    gate = EpochGate(recorder, lambda epoch: epoch != 1)
    open_hooks: dict[int, list[str]] = {}

    class Probe(L.Callback):  # after the gate: what Lightning finds on it in each epoch
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            open_hooks[trainer.current_epoch] = [name for name in EPOCH_HOOKS if getattr(gate, name) is not None]

    trainer = L.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
                        callbacks=[gate, Probe()], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(DistillationModule(), DigitsDataModule(batch_size=16))
    epochs_of = {}
    for hook, epoch in recorder.calls:
        epochs_of.setdefault(hook, []).append(epoch)
    assert epochs_of["setup"] == [-1] and epochs_of["on_train_start"] == [0] and epochs_of["on_train_end"] == [3]
    assert epochs_of["on_train_epoch_start"] == epochs_of["on_train_epoch_end"] == [0, 2]
    assert epochs_of["on_train_batch_end"] == epochs_of["on_before_backward"] == [0, 0, 2, 2]
    assert epochs_of["on_validation_batch_end"] == [0, 2]
    # Lightning calls every callable hook: in the off epoch it finds none; in the others, the callback's own methods
    # (its no-op ones included), not a forwarding layer.
    assert open_hooks[1] == [] and open_hooks[0] == open_hooks[2] == list(EPOCH_HOOKS)
    assert gate.on_after_backward.__func__ is L.Callback.on_after_backward  # a no-op, bound to the wrapped callback
    assert gate.on_after_backward.__self__ is recorder


def test_each_epoch_is_charged_its_sides_hand_off_and_a_share_of_the_flush_in_proportion():
    from benchmarks.per_sample_overhead import charges

    sides = ["a", "b", "a", "b", "b"]
    charged = charges({"a": 2.0, "b": 6.0}, flush=4.0, sides=sides)  # the flush adds half to every hand-off
    assert charged == pytest.approx({0: 1.5, 1: 3.0, 2: 1.5, 3: 3.0, 4: 3.0})
    assert sum(charged.values()) == pytest.approx(2.0 + 6.0 + 4.0)  # the run's hand-off and flush, no more
    assert charges({}, flush=0.0, sides=["a"]) == {0: 0.0}
