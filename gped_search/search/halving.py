"""``search.strategy: halving``: synchronous multi-objective successive halving inside a lockstep bracket.

A bracket asks ``n`` trials, distils all their students together to the first rung
(``distill.steps / eta**rungs``), ranks them by non-dominated sorting on the study's objectives at that
moment (validation KL and the cost figures; a penalised student costs what it would if pruned now; a
latency objective is ranked by MACs), keeps the best ``1/eta`` (a front is never split: ties are kept),
and goes on to the next rung, up to full length, pruning and fine-tuning, where the survivors are
recorded as ordinary trials. The others are told PRUNED with their rung, step, seconds and scores in
user attributes, and without intermediate values: Optuna's multi-objective TPE (4.x and 5.0) fails on
the next ``ask()`` once a PRUNED trial carries them (``_get_pruned_trial_score`` reads
``study.direction``), so their learning curve is kept in the ``curve`` user attribute instead.

Each stopped trial is recorded the moment it stops, so a worker killed mid-bracket loses no finished
rung of the others; its running trials are failed as a dead worker's and tried again on the next run.
"""

from __future__ import annotations

import math
import time

import numpy as np
import optuna
from optuna.trial import TrialState

from gped_search.config import StudyConfig
from gped_search.engine import Prepared, student_steps
from gped_search.engine.bracket import Bracket
from gped_search.engine.result import StudentFailure
from gped_search.errors import ConfigError, TrialFailed
from gped_search.metrics.interim import check_objectives
from gped_search.posterior.result import TeacherResult

from .front import keep_best
from .storage import Heartbeat, trial_finished, trial_ids

__all__ = ["rung_plan", "bracket_size", "run_bracket", "STOPPED"]

STOPPED = "stopped_rung"
"""User attribute of a trial successive halving stopped early: the rung (0-based) it stopped after."""


def rung_plan(cfg: StudyConfig, n: int) -> list[int]:
    """Cumulative student steps at the end of each rung, the last being ``distill.steps``.

    ``search.halving.rungs`` cuts before full length (default: as many as ``n`` trials allow with at
    least one survivor, at most 3); rung ``r`` of ``R`` ends at ``steps / eta**(R - r)``.
    """
    h, total = cfg.search.halving, student_steps(cfg)
    rungs = h.rungs
    if rungs is None:
        rungs = max(1, min(3, int(math.floor(math.log(max(n, 2)) / math.log(h.eta) + 1e-9))))
    plan = [int(round(total / h.eta ** (rungs - r))) for r in range(rungs)] + [total]
    if plan[0] < 1 or any(b <= a for a, b in zip(plan, plan[1:])):
        raise ConfigError(
            f"search.halving.rungs: {rungs} rungs of eta {h.eta} need more student steps than "
            f"distill.steps = {total} (the first rung would end at step {total / h.eta**rungs:.2f}); "
            f"use fewer rungs or more steps"
        )
    return plan


def bracket_size(cfg: StudyConfig, left: int | None) -> int:
    """Trials asked per bracket: ``search.halving.n`` (at most the ``left`` still to run), else every
    trial still to run; without a trial budget (a timeout), ``eta**2`` (at least ``search.batch``)."""
    h = cfg.search.halving
    if left is None:
        return h.n or max(cfg.search.batch, h.eta**2)
    return max(1, min(left, h.n)) if h.n is not None else max(1, left)


def _objectives(cfg: StudyConfig, rec: dict) -> list[float]:
    return [float(rec.get(n, float("nan"))) for n in cfg.search.objectives]


def run_bracket(
    study: optuna.Study,
    cfg: StudyConfig,
    p: Prepared,
    teacher: TeacherResult,
    runner,
    trials: list[optuna.Trial],
    *,
    tell,
    echo=None,
    progress: bool = False,
) -> None:
    """One bracket of asked ``trials``: started by ``runner``, halved rung by rung, the survivors
    finished by ``runner`` and told with ``tell(study, trial, values, error)``; ``echo(study, number)``
    announces each trial as it ends."""
    check_objectives(list(cfg.search.objectives), "halving")
    names = list(cfg.search.objectives)
    dirs = [cfg.search.objectives[n] for n in names]
    with Heartbeat(study, trial_ids(trials)):
        started, configs, seeds = runner.start_all(study, trials, echo)
        if not started:
            return
        plan = rung_plan(cfg, len(started))
        br = Bracket(p, teacher, configs, seeds, data_seed=seeds[0], total=plan[-1], progress=progress)
        done = 0
        for r, end in enumerate(plan[:-1]):
            br.advance(end - done, desc=f"rung {r + 1}/{len(plan)}: {len(br.active)} students")
            done = end
            _fail_diverged(study, br, started, runner, tell, echo)
            active = br.active
            if len(active) <= 1:
                continue
            recs = {i: br.interim(i) for i in active}
            vals = np.array([_objectives(cfg, recs[i]) for i in active], dtype=float)
            keep = {active[j] for j in keep_best(vals, dirs, math.ceil(len(active) / cfg.search.halving.eta))}
            stop = [i for i in active if i not in keep]
            br.stop(stop)
            for i in stop:
                _record_stopped(study, started[i], configs[i], br, i, r, end, recs[i], names, tell)
                if echo:
                    echo(study, started[i].number)
        br.advance(plan[-1] - done, desc=f"full length: {len(br.active)} students")
        out = br.finish(cfg.search.latency_batch)
        for i, res in enumerate(out):
            if res is None or i in br.stopped or trial_finished(started[i]):
                continue
            t = started[i]
            if isinstance(res, StudentFailure):
                if isinstance(res.error, OSError):
                    raise res.error
                tell(study, t, None, runner.failed(t, res.error))
            else:
                res.metrics["halving_rungs"] = len(plan) - 1
                try:
                    tell(study, t, runner.finish(t, configs[i], res), None)
                except TrialFailed as e:
                    tell(study, t, None, e)
            if echo:
                echo(study, t.number)


def _fail_diverged(study, br: Bracket, started, runner, tell, echo) -> None:
    """Students that diverged during the last rung fail now (their bracket-mates go on)."""
    for i, m in br.members.items():
        if m.error is not None and i not in br.stopped and not trial_finished(started[i]):
            tell(study, started[i], None, runner.failed(started[i], m.error))
            br.stopped.add(i)
            if echo:
                echo(study, started[i].number)


def _record_stopped(study, trial, tc: StudyConfig, br: Bracket, i: int, r: int, step: int, rec: dict, names, tell):
    """A stopped student: PRUNED, with its rung, step, seconds, scores and curve as user attributes."""
    trial.set_user_attr(STOPPED, r)
    trial.set_user_attr("stopped_step", step)
    trial.set_user_attr("train_seconds", br.members[i].seconds)
    trial.set_user_attr("family", tc.student.family.value)
    trial.set_user_attr("lambda_g", tc.prune.lambda_g)
    trial.set_user_attr("arch", br.members[i].model.arch.describe())
    for n in names:
        trial.set_user_attr(f"rung_{n}", float(rec[n]))
    trial.set_user_attr("curve", [[int(s), float(v)] for s, v in br.curve(i)])
    trial.set_user_attr("stopped_at", time.strftime("%Y-%m-%d %H:%M:%S"))
    tell(study, trial, None, None, state=TrialState.PRUNED)
