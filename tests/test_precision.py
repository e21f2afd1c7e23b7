"""Mixed precision: every method config (each policy and both divergences, with its digits adjustment) trains under
``bf16-mixed`` on the CPU with finite losses, the student running under autocast and the temperatures and
losses computed in float32 (autocast off, float32 inputs and outputs).

``16-mixed`` (float16 autocast with its loss scaler) needs a GPU: the same test runs it on CUDA when one is present
and is skipped on the CPU; docs/reliability.md says how the loss scaler interacts with the training step.
"""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from tests.conftest import CONFIGS, config_args, experiment

# Every method config on the digits experiment; Block-KD is a layer on a method (KD here) with a CNN student.
METHODS = sorted(path.stem for path in (CONFIGS / "methods").glob("*.yaml") if path.stem not in ("grid", "blockkd"))
LAYERS = {method: experiment(method) for method in METHODS}
LAYERS["blockkd"] = [*experiment("kd", pair="digits_cnn-cnn_small"), CONFIGS / "methods" / "blockkd.yaml"]


# (accelerator, precision, the student's autocast dtype): bf16 on the CPU always, float16 on a GPU where one is present.
PRECISIONS = [
    pytest.param("cpu", "bf16-mixed", torch.bfloat16, id="cpu-bf16-mixed"),
    pytest.param("cuda", "16-mixed", torch.float16, id="cuda-16-mixed",
                 marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="16-mixed needs a GPU")),
]  # fmt: skip


class AutocastProbe:
    """Forward hooks recording, per call, whether autocast was on and the dtypes going in and out."""

    def __init__(self, device_type: str = "cpu"):
        self.device_type = device_type
        self.calls: dict[str, list[tuple[bool, set, set]]] = {}

    def watch(self, name: str, module: torch.nn.Module) -> None:
        def hook(module, inputs, output) -> None:
            outputs = output.as_dict().values() if hasattr(output, "as_dict") else [output]
            self.calls.setdefault(name, []).append((
                torch.is_autocast_enabled(self.device_type),
                {value.dtype for value in inputs if torch.is_tensor(value) and value.is_floating_point()},
                {value.dtype for value in outputs if torch.is_tensor(value)},
            ))  # fmt: skip

        module.register_forward_hook(hook)


@pytest.mark.slow
@pytest.mark.parametrize("accelerator, precision, half", PRECISIONS)
@pytest.mark.parametrize("method", sorted(LAYERS))
def test_method_trains_under_mixed_precision_with_float32_temperatures(tmp_path, method, accelerator, precision, half):
    from distill.cli import cli_main

    cli = cli_main([*config_args(LAYERS[method]), "--per_sample_statistics=null"], run=False)
    module, data = cli.model, cli.datamodule
    probe = AutocastProbe(accelerator)
    probe.watch("student", module.student)
    if module.teacher is not None:
        probe.watch("policy", module.temperature_policy)
        probe.watch("divergence", module.divergence)
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, precision=precision, max_steps=2, log_every_n_steps=1, limit_val_batches=0,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, data)  # the module's finiteness check would stop it at any non-finite loss
    assert trainer.global_step == 2 and math.isfinite(float(trainer.callback_metrics["train/loss"]))

    if module.method is None:  # Block-KD runs the student block by block, not through its forward
        training_calls = [call for call in probe.calls["student"] if call[0]]
        assert training_calls and all(outputs == {half} for _, _, outputs in training_calls)
    if module.teacher is not None:
        for name in ("policy", "divergence"):
            calls = probe.calls[name]
            assert len(calls) >= 2, name  # once a step (Block-KD: once per stepping stone and the cross term)
            for autocast, inputs, outputs in calls:
                assert not autocast, name
                assert inputs <= {torch.float32} and outputs == {torch.float32}, (name, inputs, outputs)
