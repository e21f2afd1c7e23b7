"""``ExportTeacher``: after a CE run is tested, write its student as a teacher checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from distill.errors import DistillError
from teachers.checkpoint import save_teacher_checkpoint
from teachers.registry import TEACHERS


class ExportTeacher(L.Callback):
    """At the end of ``test`` (which ``distill fit`` runs after training), save the trained model as a
    teacher checkpoint with its measured test top-1, atomically, on global rank 0 only.

    Args:
        name: a ``teachers.TEACHERS`` name; its entry gives the file: ``<folder>/<file>``, the folder
            being ``$DISTILL_TEACHER_DIR`` when it is set, else ``teachers/checkpoints``.
        path: write here instead (for teachers not in the registry yet).
    """

    def __init__(self, name: str | None = None, path: str | None = None):
        if (name is None) == (path is None):
            raise DistillError("ExportTeacher needs exactly one of `name` (a registry entry) or `path`")
        if name is not None and name not in TEACHERS:
            raise DistillError(f"ExportTeacher.name: unknown teacher {name!r}: add it to teachers/registry.py first")
        if name is not None and TEACHERS[name].downloaded:
            raise DistillError(
                f"ExportTeacher.name: {name!r} is a published teacher (its file is downloaded, not trained here): "
                "add a registry entry of your own for the teacher you train"
            )
        self.name = name
        self.path = Path(path) if path is not None else TEACHERS[name].write_path
        self.written: Path | None = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        accuracy = float(trainer.callback_metrics["test/acc1"])
        hparams = pl_module.hparams
        data = trainer.datamodule
        self.written = save_teacher_checkpoint(
            self.path,
            pl_module.student,
            architecture=hparams.student,
            num_classes=hparams.num_classes,
            input_shape=tuple(hparams.input_shape),
            dataset=f"{type(data).__module__}.{type(data).__name__}" if data is not None else "unknown",
            test_accuracy=accuracy,
        )
        rank_zero_info(f"teacher checkpoint written: {self.written} (test top-1 {100 * accuracy:.2f}%)")
