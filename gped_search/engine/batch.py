"""Search trials' students: a lockstep batch against one teacher (:func:`train_trials`, the
search's batch mode) and a single trial, which is a batch of one (:func:`train_trial`).

A batch builds each student from its own seed, distils all of them in lockstep (one minibatch
stream, one target computation, one backward per step), runs the prune -> fine-tune schedule
(:func:`gped_search.engine.pruning.prune_schedule`) and records each student: a
:class:`~gped_search.engine.bracket.Bracket` (successive halving's unit) advanced once.
"""

from __future__ import annotations

from dataclasses import replace

from gped_search.config import PruneConfig, StudentConfig, StudyConfig
from gped_search.distill.loop import TeacherResult
from gped_search.models import Net

from .bracket import Bracket
from .context import Prepared, student_steps
from .result import StudentFailure, StudentResult

__all__ = ["train_trial", "train_trials", "run_batch"]


def run_batch(
    p: Prepared,
    teacher: TeacherResult,
    configs: list[StudyConfig],
    seeds: list[int],
    *,
    data_seed: int,
    steps: int,
    latency_batch: int = 1,
    progress: bool = False,
    models: list[Net | None] | None = None,
) -> list[StudentResult | StudentFailure]:
    """Per config (one trial's student, prune and distill choices), its student built from its seed
    (or taken from ``models``: a supernet's slice), then all distilled together for ``steps`` steps on
    the stream of ``data_seed``, pruned and fine-tuned (:func:`prune_schedule`) and recorded: a
    :class:`StudentResult` or, for a student that failed alone (say diverged), a
    :class:`StudentFailure`. A student's ``train_seconds`` is its share of the lockstep time plus its
    own pruning and evaluation. This is a :class:`Bracket` advanced once by the whole length."""
    br = Bracket(p, teacher, configs, seeds, data_seed=data_seed, total=steps, models=models, progress=progress)
    br.advance(steps, desc="student" if len(br.ids) == 1 else f"{len(br.ids)} students")
    return br.finish(latency_batch)


def train_trial(
    p: Prepared,
    teacher: TeacherResult,
    student: StudentConfig,
    prune: PruneConfig,
    *,
    seed: int,
    steps: int | None = None,
    latency_batch: int = 1,
    progress: bool = False,
    data_seed: int | None = None,
) -> StudentResult:
    """One search trial's student: build -> distil (+ group LASSO) -> prune -> fine-tune -> record.

    A batch of one (:func:`run_batch`) with the study's distill settings; a failure is raised.
    ``seed`` sets the initial weights; ``data_seed`` (default ``seed``) the transfer minibatch and
    target stream. Both are recorded, so a trial of a lockstep batch (whose stream came from the
    batch's first seed) is reproduced by ``train_trial(..., seed=seed, data_seed=data_seed)``.
    """
    (res,) = run_batch(
        p,
        teacher,
        [replace(p.cfg, student=student, prune=prune)],
        [seed],
        data_seed=seed if data_seed is None else data_seed,
        steps=steps or student_steps(p.cfg),
        latency_batch=latency_batch,
        progress=progress,
    )
    if isinstance(res, StudentFailure):
        raise res.error
    return res


def train_trials(
    p: Prepared,
    teacher: TeacherResult,
    configs: list[StudyConfig],
    seeds: list[int],
    *,
    steps: int | None = None,
    latency_batch: int = 1,
    progress: bool = False,
    models: list[Net | None] | None = None,
) -> list[StudentResult | StudentFailure]:
    """Several trials' students trained in lockstep against one teacher (the search's batch mode).

    Each config is one trial's study config (its student, prune and distill choices; data, targets and
    step counts are the study's). Students are initialised from their own seeds as in
    :func:`train_trial`, then share one minibatch stream (drawn from ``seeds[0]``, recorded as
    ``data_seed``). Returns, per trial, a :class:`StudentResult` (its record also says
    ``batch_students``) or the :class:`StudentFailure` that ended it (a diverging student fails alone).
    """
    out = run_batch(
        p,
        teacher,
        list(configs),
        list(seeds),
        data_seed=seeds[0],
        steps=steps or student_steps(p.cfg),
        latency_batch=latency_batch,
        progress=progress,
        models=models,
    )
    for r in out:
        if isinstance(r, StudentResult):
            r.metrics["batch_students"] = len(configs)
    return out
