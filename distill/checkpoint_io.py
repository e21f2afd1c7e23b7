"""Training checkpoints: written atomically and durably, read as plain weights only, checked before a resume.

``AtomicCheckpointIO`` is the Lightning ``CheckpointIO`` plugin the ``distill`` command installs: a checkpoint
streams into a temporary file next to its target, is fsync'ed, renamed over the target and the folder is
fsync'ed (``distill.atomic_file``). A process killed during a save (SIGKILL, a node failure) therefore never
leaves a partial ``last.ckpt``: the previous one stays, and the temporary ``.last.ckpt.<random>.tmp`` is never
taken for a checkpoint. Lightning's own ``TorchCheckpointIO`` buffers the whole checkpoint in memory and moves
an fsspec temporary file into place without fsync, from the system temp folder (a copy, not a rename, when
that is another file system).

``check_resume_checkpoint`` reads a checkpoint given as ``ckpt_path`` before any training and says in one line
why it cannot be resumed: missing, truncated, holding pickled code instead of plain weights, or written for
another student or policy.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from distill.atomic_file import open_atomically
from distill.errors import DistillError, load_failure_reason

# What the model's state_dict keys start with for weights that checkpoints never hold (the frozen teacher).
NOT_CHECKPOINTED = ("teacher.",)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic and durable and whose loads are ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` (temporary file, fsync, rename, fsync of the folder)."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with open_atomically(path) as stream:
            torch.save(checkpoint, stream)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Read ``path`` with ``torch.load(weights_only=True)`` whatever was asked: nothing loads pickled code."""
        if not Path(path).is_file():
            raise DistillError(f"ckpt_path: checkpoint {path} not found")
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def read_checkpoint(path: str | Path, field: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint dict at ``path``, or one ``DistillError`` line naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise DistillError(
            f"{field}: checkpoint {path} not found; give an existing .ckpt file, or last (the newest of this run)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise DistillError(
            f"{field}: {path} is not a plain-weights checkpoint ({load_failure_reason(error)}); distill loads "
            "checkpoints with weights_only=True and never runs pickled code: resume from a checkpoint that distill "
            "fit wrote"
        ) from None
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file fails in many ways; all mean the same
        raise DistillError(
            f"{field}: {path} is truncated or not a checkpoint ({load_failure_reason(error)[:160]}); resume from an "
            "older checkpoint of the run (--ckpt_path=last picks the newest readable one)"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "global_step" not in checkpoint:
        found = sorted(checkpoint)[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise DistillError(
            f"{field}: {path} is not a Lightning training checkpoint (found {found}, expected state_dict and "
            "global_step); a teacher .pt file goes in model.teacher"
        )
    return checkpoint


def check_checkpoint_fits(
    checkpoint: dict[str, Any], model: nn.Module, path: str | Path, field: str = "ckpt_path"
) -> None:
    """The checkpoint's weights have exactly the model's names and shapes (the teacher aside); else one line
    naming the first difference: a checkpoint of another student or another policy (CTKD's theta) cannot resume."""
    def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
        return {name: tuple(value.shape) for name, value in state.items() if not name.startswith(NOT_CHECKPOINTED)}

    expected, found = shapes(model.state_dict()), shapes(checkpoint["state_dict"])
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    reshaped = sorted(name for name in expected.keys() & found.keys() if expected[name] != found[name])
    if not (missing or unexpected or reshaped):
        return
    hyper = checkpoint.get("hyper_parameters", {})
    student = hyper.get("student") if isinstance(hyper, dict) else None
    written_for = f" (written for student {student!r})" if student else ""
    if reshaped:
        name = reshaped[0]
        detail = f"{name} has shape {found[name]} there but {expected[name]} in this model"
    elif missing:
        detail = f"it lacks {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
    else:
        more = f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        detail = f"it holds {unexpected[0]}{more} that this model has not"
    raise DistillError(
        f"{field}: {path} is for another architecture or policy{written_for}: {detail}; resume with the config of "
        "the run that wrote it, or start a new run"
    )


# Model arguments the command line links from the data module: compared through the weights' shapes instead.
LINKED_ARGUMENTS = ("num_classes", "input_shape")
PLAIN = (dict, list, tuple, str, int, float, bool, type(None))


def first_difference(saved: Any, given: Any, name: str) -> tuple[str, Any, Any] | None:
    """The first leaf where two nested config values differ: ``(dotted name, saved, given)``; ``None`` where they
    agree or cannot be compared (an object rather than plain config data)."""
    if not isinstance(saved, PLAIN) or not isinstance(given, PLAIN):
        return None
    if isinstance(saved, dict) and isinstance(given, dict):
        for key in sorted(saved.keys() | given.keys(), key=str):
            found = first_difference(saved.get(key), given.get(key), f"{name}.{key}")
            if found:
                return found
        return None
    if isinstance(saved, (list, tuple)) and isinstance(given, (list, tuple)) and len(saved) == len(given):
        for index, (left, right) in enumerate(zip(saved, given)):
            found = first_difference(left, right, f"{name}[{index}]")
            if found:
                return found
        return None
    return None if saved == given else (name, saved, given)


def check_hyperparameters(
    checkpoint: dict[str, Any], model_config: Any, path: str | Path, field: str = "ckpt_path"
) -> None:
    """The model settings stored in a checkpoint (``hyper_parameters``) equal the config's ``model`` section; else one
    line naming the first difference (resuming continues the same run: another student, teacher, policy or
    optimizer is another run)."""
    saved = checkpoint.get("hyper_parameters") or {}
    given = model_config.as_dict() if hasattr(model_config, "as_dict") else dict(model_config or {})
    for key in sorted(saved):
        if key.startswith("_") or key in LINKED_ARGUMENTS:
            continue
        if key not in given:
            raise DistillError(
                f"{field}: {path} holds model.{key}, which this version of distill does not know: resume it with the "
                "version that wrote it, or start a new run"
            )
        found = first_difference(saved[key], given[key], f"model.{key}")
        if found:
            name, old, new = found
            raise DistillError(
                f"{field}: {path} was written with {name}={old!r}, but this config gives {new!r}; a resumed run "
                "continues the same run: resume with that run's config (its config.yaml), or drop --ckpt_path to start "
                "a new run"
            )


def check_resume_checkpoint(path: str | Path, model: nn.Module, field: str = "ckpt_path") -> int:
    """Read ``path`` and check it fits ``model``; returns its ``global_step`` (one ``DistillError`` line otherwise)."""
    checkpoint = read_checkpoint(path, field)
    check_checkpoint_fits(checkpoint, model, path, field)
    return int(checkpoint["global_step"])
