"""Teacher and student builders."""

from gped_search.models.nets import (
    Arch,
    Net,
    arch_of,
    build,
    cnn_arch,
    mlp_arch,
    scaled_width,
    student_arch,
    teacher_arch,
)

__all__ = [
    "Arch",
    "Net",
    "arch_of",
    "build",
    "cnn_arch",
    "mlp_arch",
    "scaled_width",
    "student_arch",
    "teacher_arch",
]
