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
from distill.errors import DistillError

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
        raise DistillError(f"{field}: checkpoint {path} not found; give an existing .ckpt file, or last (the newest of this run)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        reason = " ".join(str(error).split())
        reason = reason[reason.find("Unsupported global") :].split(".")[0] if "Unsupported global" in reason else "pickled objects"
        raise DistillError(
            f"{field}: {path} is not a plain-weights checkpoint ({reason}); distill loads checkpoints with "
            "weights_only=True and never runs pickled code: resume from a checkpoint that distill fit wrote"
        ) from None
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file fails in many ways; all mean the same
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise DistillError(
            f"{field}: {path} is truncated or not a checkpoint ({reason}); resume from an older checkpoint of the run "
            "(--ckpt_path=last picks the newest readable one)"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "global_step" not in checkpoint:
        found = sorted(checkpoint)[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise DistillError(
            f"{field}: {path} is not a Lightning training checkpoint (found {found}, expected state_dict and "
            "global_step); a teacher .pt file goes in model.teacher"
        )
    return checkpoint


def check_checkpoint_fits(checkpoint: dict[str, Any], model: nn.Module, path: str | Path, field: str = "ckpt_path") -> None:
    """The checkpoint's weights have exactly the model's names and shapes (the teacher aside); else one line
    naming the first difference: a checkpoint of another student or another policy (CTKD's theta) cannot resume."""
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items() if not name.startswith(NOT_CHECKPOINTED)}
    found = {name: tuple(value.shape) for name, value in checkpoint["state_dict"].items() if not name.startswith(NOT_CHECKPOINTED)}
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    reshaped = sorted(name for name in expected.keys() & found.keys() if expected[name] != found[name])
    if not (missing or unexpected or reshaped):
        return
    hyper = checkpoint.get("hyper_parameters", {})
    written_for = f" (written for student {hyper['student']!r})" if isinstance(hyper, dict) and "student" in hyper else ""
    if reshaped:
        name = reshaped[0]
        detail = f"{name} has shape {found[name]} there but {expected[name]} in this model"
    elif missing:
        detail = f"it lacks {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
    else:
        detail = f"it holds {unexpected[0]}" + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else "") + " that this model has not"
    raise DistillError(
        f"{field}: {path} is for another architecture or policy{written_for}: {detail}; resume with the config of "
        "the run that wrote it, or start a new run"
    )


def check_resume_checkpoint(path: str | Path, model: nn.Module, field: str = "ckpt_path") -> int:
    """Read ``path`` and check it fits ``model``; returns its ``global_step`` (one ``DistillError`` line otherwise)."""
    checkpoint = read_checkpoint(path, field)
    check_checkpoint_fits(checkpoint, model, path, field)
    return int(checkpoint["global_step"])
