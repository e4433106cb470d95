"""Students trained together: a :class:`Member` of a lockstep group and :func:`train_together`, which
steps a group against one teacher and charges each member its share of the time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from gped_search.config import DistillConfig, PruneConfig
from gped_search.distill.loop import TeacherResult, student_diverged, train_students
from gped_search.distill.student import StudentTrainer
from gped_search.models import Net

from .context import Prepared

__all__ = ["Member", "train_together"]


@dataclass
class Member:
    """One student of a lockstep group: its model and settings, its pruning record so far, the
    seconds charged to it, or the error that ended it."""

    model: Net
    distill: DistillConfig
    prune: PruneConfig
    pruning: dict | None = None
    seconds: float = 0.0
    error: BaseException | None = None


def train_together(
    members: Sequence[Member],
    trainers: Sequence[StudentTrainer],
    p: Prepared,
    teacher: TeacherResult,
    steps: int,
    seed: int,
    *,
    progress: bool = False,
    desc: str = "students",
) -> None:
    """Train ``trainers`` (one per member) in lockstep for ``steps`` steps on the minibatch stream of
    ``seed``; each member is charged an equal share of the time, and a diverging student's member
    gets its error (the others go on). A lone student's progress bar stays with its last loss; a
    group's is cleared."""
    t0 = time.perf_counter()
    res = train_students(
        list(trainers),
        teacher,
        p.bundle.transfer,
        steps,
        p.cfg.distill,
        p.cfg.data,
        seed=seed,
        progress=progress,
        desc=desc,
        leave=len(members) == 1,
    )
    share = (time.perf_counter() - t0) / len(members)
    for m in members:
        m.seconds += share
    for j, step in res["diverged"].items():
        members[j].error = student_diverged(step)
