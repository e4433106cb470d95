"""The engine: from a :class:`StudyConfig` to a teacher, trained students and their records.

Data flow: config -> :func:`prepare` (data on the device, expectations; ``context``) ->
:func:`sample_teacher` (SGLD, once per study) -> :func:`train_trial` / :func:`train_trials` (``batch``:
build -> distil with the study's penalty -> the prune -> fine-tune schedule of ``pruning`` -> the
record of ``scoring``), each giving a :class:`StudentResult` or a :class:`StudentFailure`.
:func:`distill_online` (``online``) is the paper's online algorithm for one student (the
``gped-search distill`` command).
"""

from .batch import train_trial, train_trials
from .context import (
    Prepared,
    make_trainer,
    prepare,
    resolve_device,
    sample_teacher,
    student_arch_for,
    student_steps,
    teacher_arch_for,
    trial_seed,
)
from .pruning import prune_and_finetune
from .result import StudentFailure, StudentResult
from .scoring import student_record

__all__ = [
    "resolve_device",
    "trial_seed",
    "Prepared",
    "prepare",
    "teacher_arch_for",
    "student_arch_for",
    "make_trainer",
    "sample_teacher",
    "student_steps",
    "prune_and_finetune",
    "student_record",
    "train_trial",
    "train_trials",
    "StudentResult",
    "StudentFailure",
]
