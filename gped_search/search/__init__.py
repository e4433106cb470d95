"""Optuna search over students: the search space, storages, the teacher, running and reading studies.

Modules, top-down: :mod:`.space` (the search space; no Optuna), :mod:`.samplers`, :mod:`.storage`
(storages, opening a study; the only user of Optuna's private API), :mod:`.results` (reading a
study), :mod:`.teacher` (the shared teacher), :mod:`.study` (running trials), :mod:`.collect`
(studies for a comparison). Names below are imported on first use, so reading a study does not
import torch.
"""

from gped_search.config.metric_names import METRICS
from gped_search.config.space import PARAMS, parse_space

from .space import suggest

_LAZY = {
    "StudyError": "storage",
    "mask_url": "storage",
    "open_study": "storage",
    "storage_url": "storage",
    "study_status": "results",
    "teacher_seconds_saved": "results",
    "trials_frame": "results",
    "ensure_teacher": "teacher",
    "run_study": "study",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METRICS",
    "PARAMS",
    "parse_space",
    "suggest",
    "StudyError",
    "ensure_teacher",
    "mask_url",
    "open_study",
    "run_study",
    "storage_url",
    "study_status",
    "teacher_seconds_saved",
    "trials_frame",
]
