"""Optuna search over students: the search space and the study runner."""

from .space import METRICS, PARAMS, parse_space, suggest
from .study import (
    StudyError,
    ensure_teacher,
    mask_url,
    open_study,
    run_study,
    storage_url,
    study_status,
    teacher_seconds_saved,
    trials_frame,
)

__all__ = ["METRICS", "PARAMS", "parse_space", "suggest", "StudyError", "ensure_teacher", "mask_url",
           "open_study", "run_study", "storage_url", "study_status", "teacher_seconds_saved", "trials_frame"]
