"""The teacher zoo: a registry of named teachers and their checkpoint files.

``teachers.load_teacher(name_or_path, num_classes, input_shape)`` is the one door in. Teachers are
trained here with ``make teacher NAME=<name> DATA=<data>`` (``configs/teachers/<name>.yaml``), or are the
published CIFAR-100 teachers of CRD/mdistiller (``cifar_teachers.tar``) or torchvision's ImageNet weights;
``make teacher-check NAME=<name>`` measures one.
"""

from teachers.checkpoint import TEACHER_FORMAT, load_teacher, read_teacher_checkpoint, save_teacher_checkpoint
from teachers.published import PUBLISHED_SAFE_GLOBALS, read_published_checkpoint, read_torchvision_checkpoint
from teachers.registry import CHECKPOINT_DIR, TEACHER_DIR_VARIABLE, TEACHERS, TeacherEntry, resolve, search_dirs
from teachers.export import ExportTeacher

__all__ = [
    "CHECKPOINT_DIR",
    "ExportTeacher",
    "PUBLISHED_SAFE_GLOBALS",
    "TEACHERS",
    "TEACHER_DIR_VARIABLE",
    "TEACHER_FORMAT",
    "TeacherEntry",
    "load_teacher",
    "read_published_checkpoint",
    "read_teacher_checkpoint",
    "read_torchvision_checkpoint",
    "resolve",
    "save_teacher_checkpoint",
    "search_dirs",
]
