"""What training a student gives: a :class:`StudentResult`, or a :class:`StudentFailure` that says
which trial failed and why (a lockstep batch returns one of the two per trial)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gped_search.config import StudyConfig
from gped_search.models import Net

__all__ = ["StudentResult", "StudentFailure"]


@dataclass
class StudentResult:
    """A trained (and maybe pruned) student and what was measured on it.

    ``metrics`` is the trial's record (:func:`gped_search.engine.scoring.trial_record`): quality,
    cost and latency figures, plus ``train_seconds`` and ``data_seed``. ``pruning`` is the pruning
    record (method, units kept and removed, history), ``None`` for an unpruned student; ``curve`` is
    the learning curve, ``(step, loss)`` pairs. ``model, metrics = result`` unpacks like the
    ``(model, record)`` pair earlier versions returned.
    """

    model: Net
    metrics: dict[str, Any]
    pruning: dict[str, Any] | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.metrics))


@dataclass
class StudentFailure:
    """A trial of a lockstep batch that ended in ``error`` (its batch-mates go on)."""

    config: StudyConfig
    error: BaseException
