"""The teacher zoo: a registry of named, trained teachers and their checkpoint files.

``teachers.load_teacher(name_or_path, num_classes, input_shape)`` is the one door in; teachers are
trained with ``make teacher NAME=<name> DATA=<data>`` (``configs/teachers/<name>.yaml``).
"""

from teachers.checkpoint import TEACHER_FORMAT, load_teacher, read_teacher_checkpoint, save_teacher_checkpoint
from teachers.registry import CHECKPOINT_DIR, TEACHERS, TeacherEntry, resolve
from teachers.export import ExportTeacher

__all__ = [
    "CHECKPOINT_DIR",
    "ExportTeacher",
    "TEACHERS",
    "TEACHER_FORMAT",
    "TeacherEntry",
    "load_teacher",
    "read_teacher_checkpoint",
    "resolve",
    "save_teacher_checkpoint",
]
