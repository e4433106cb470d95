"""A lockstep group of trials' students trained in pieces: :class:`Bracket`.

Successive halving advances a bracket rung by rung, scores its students between rungs
(:meth:`Bracket.interim`: the selection-split quality, and the size a penalised student would have if
pruned now) and stops all but the best; the survivors go on exactly as if nobody had stopped (one
minibatch stream and one Adam across pieces, each student's gradient its own; see
:class:`gped_search.distill.loop.LockstepRun`), then through the prune -> fine-tune schedule and into
their records (:meth:`Bracket.finish`). A bracket advanced once by the full length is a lockstep batch.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import torch

from gped_search.config import StudyConfig
from gped_search.distill.loop import LockstepRun, TeacherResult, student_diverged
from gped_search.metrics.interim import COST, PROXY, interim_scores
from gped_search.models import Net, build

from .context import Prepared, make_trainer, student_arch_for
from .lockstep import Member
from .pruning import prune_round, prune_schedule
from .result import StudentFailure, StudentResult
from .scoring import trial_record

__all__ = ["Bracket"]


class Bracket:
    """Trials' students (``configs``, initial weights from ``seeds`` or given ``models``) distilled in
    lockstep on the stream of ``data_seed``; ``total`` is the full length (it places the learning
    curve's 20 points)."""

    def __init__(
        self,
        p: Prepared,
        teacher: TeacherResult,
        configs: list[StudyConfig],
        seeds: list[int],
        *,
        data_seed: int,
        total: int,
        models: list[Net | None] | None = None,
        progress: bool = False,
    ):
        self.p, self.teacher, self.configs, self.data_seed = p, teacher, configs, data_seed
        self.progress, self.steps = progress, 0
        self.out: list[StudentResult | StudentFailure | None] = [None] * len(configs)
        self.members: dict[int, Member] = {}
        self.trainers = {}
        for i, (c, seed) in enumerate(zip(configs, seeds)):
            try:
                given = models[i] if models is not None else None
                if given is None:
                    torch.manual_seed(seed)
                    given = build(student_arch_for(p, c.student)).to(p.device)
                self.trainers[i] = make_trainer(given, p, c.distill, prune=c.prune)
            except Exception as e:  # noqa: BLE001 - one trial's failure, returned to the caller
                self.out[i] = StudentFailure(c, e)
                continue
            self.members[i] = Member(given, c.distill, c.prune)
        self.ids = list(self.members)  # position in the lockstep run -> config index
        self.run = (
            LockstepRun(
                [self.trainers[i] for i in self.ids],
                teacher,
                p.bundle.transfer,
                p.cfg.distill,
                p.cfg.data,
                seed=data_seed,
                total=total,
            )
            if self.ids
            else None
        )
        self.stopped: set[int] = set()

    @property
    def active(self) -> list[int]:
        """Config indices still training (not failed, not stopped)."""
        return [i for i in self.ids if i not in self.stopped and self.members[i].error is None]

    def advance(self, steps: int, desc: str = "students") -> None:
        """``steps`` more steps of every active student; each is charged an equal share of the time."""
        active = self.active
        if not active or steps <= 0:
            return
        t0 = time.perf_counter()  # a lone student's bar stays, with its last loss; a group's is cleared
        res = self.run.run(steps, progress=self.progress, desc=desc, leave=len(active) == 1)
        share = (time.perf_counter() - t0) / len(active)
        for i in active:
            self.members[i].seconds += share
        for j, step in res["diverged"].items():
            self.members[self.ids[j]].error = student_diverged(step)
        self.steps += steps

    def stop(self, indices) -> None:
        """Students (config indices) that take no more steps."""
        self.run.stop([self.ids.index(i) for i in indices])
        self.stopped |= set(indices)

    def interim(self, i: int) -> dict:
        """Student ``i`` now: its selection-split quality; with a pruning schedule, the cost figures are
        those of a copy pruned at once to the schedule's end (the size it would have if pruned now)."""
        m = self.members[i]
        t0 = time.perf_counter()
        rec = interim_scores(self.p, self.teacher, m.model)
        if m.prune.active:
            pruned = copy.deepcopy(m.model)
            prune_round(pruned, self.p, replace(m.prune, rounds=1), 0, None, self.teacher, self.data_seed)
            cost = interim_scores(self.p, self.teacher, pruned)
            rec.update({k: cost[k] for k in (*COST, *PROXY)})
        m.seconds += time.perf_counter() - t0
        return rec

    def curve(self, i: int) -> list[tuple[int, float]]:
        return list(self.trainers[i].curve)

    def finish(self, latency_batch: int = 1) -> list[StudentResult | StudentFailure | None]:
        """The active students through the prune -> fine-tune schedule and into their records; per
        config a :class:`StudentResult`, a :class:`StudentFailure`, or ``None`` for a stopped one."""
        members = {i: self.members[i] for i in self.ids if i not in self.stopped}
        prune_schedule(
            [m for m in members.values() if m.error is None and m.prune.active],
            self.p,
            self.teacher,
            self.data_seed,
            progress=self.progress,
        )
        for i, m in members.items():
            c = self.configs[i]
            if m.error is not None:
                self.out[i] = StudentFailure(c, m.error)
                continue
            t0 = time.perf_counter()
            try:
                rec = trial_record(
                    m.model,
                    self.teacher,
                    self.p,
                    c.prune,
                    m.pruning,
                    self.steps,
                    latency_batch,
                    c.student.precision.value,
                )
            except Exception as e:  # noqa: BLE001
                self.out[i] = StudentFailure(c, e)
                continue
            rec["train_seconds"] = m.seconds + time.perf_counter() - t0
            rec["data_seed"] = self.data_seed  # the bracket's shared minibatch stream
            self.out[i] = StudentResult(m.model, rec, m.pruning, self.curve(i))
        return self.out
