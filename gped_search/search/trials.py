"""Running trials: one trial's life (sample, train, record, checkpoint) and the lockstep batch mode.

:class:`_TrialRunner` does what a trial does around training; :func:`make_objective` runs one trial
at a time inside ``study.optimize``; :func:`optimize_batched` asks ``search.batch`` trials and
trains their students together (``engine.train_trials``). The one line ``gped-search run`` prints per
finished trial is :mod:`.trial_lines`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import socket
import time
import traceback
import warnings
from dataclasses import replace
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState
from tqdm.auto import tqdm

from gped_search.checkpoints import save_checkpoint
from gped_search.config import StudyConfig, to_dict
from gped_search.config.space import Spec
from gped_search.engine import Prepared, StudentFailure, StudentResult, train_trial, train_trials, trial_seed
from gped_search.errors import ConfigError, DivergenceError, TrialFailed
from gped_search.posterior.result import TeacherResult
from gped_search.seeds import search_seed
from gped_search.store import publish_study_file, study_store

from .results import is_scalar
from .space import suggest
from .storage import Heartbeat, fail_dead_trials, grid_left, record_curve, trial_ids
from .trial_lines import echo_trial

__all__ = [
    "EXPECTED_FAILURES",
    "TrialFailed",
    "make_objective",
    "optimize_batched",
    "finished",
    "mark_interrupted",
    "retry_interrupted",
]


EXPECTED_FAILURES: tuple[type[BaseException], ...] = (
    DivergenceError,
    ConfigError,
    MemoryError,
    torch.cuda.OutOfMemoryError,
)
"""Failures a trial records as one line (a diverging student, out of memory, bad settings)."""

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- a trial around its training


class _TrialRunner:
    """What a trial does around training: sample its config, record metrics, checkpoint, objectives."""

    def __init__(
        self,
        cfg: StudyConfig,
        p: Prepared,
        teacher: TeacherResult,
        artifact_dir: Path,
        specs: dict[str, Spec],
    ):
        self.cfg, self.p, self.teacher, self.artifact_dir, self.specs = (
            cfg,
            p,
            teacher,
            artifact_dir,
            specs,
        )
        self.names = list(cfg.search.objectives)
        self.remote = study_store(cfg)  # search.artifacts: what other machines read the checkpoints from
        if self.remote is not None:
            self.store = self.remote.artifact_store()
        else:
            self.store = optuna.artifacts.FileSystemArtifactStore(str(artifact_dir / "artifacts"))
            (artifact_dir / "artifacts").mkdir(parents=True, exist_ok=True)

    def start(self, trial: optuna.Trial) -> tuple[StudyConfig, int]:
        fail_dead_trials(trial.study)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        tc = suggest(trial, self.cfg, self.specs).cfg
        seed = trial_seed(search_seed(self.cfg), trial.number)
        trial.set_user_attr("seed", seed)
        return tc, seed

    def start_all(self, study: optuna.Study, trials: list[optuna.Trial], echo=None) -> tuple[list, list, list]:
        """:meth:`start` each asked trial; one that cannot start is told FAIL (and echoed) at once.
        Returns the started trials, their configs and their seeds."""
        started, configs, seeds = [], [], []
        for t in trials:
            try:
                tc, seed = self.start(t)
            except Exception as e:  # noqa: BLE001 - recorded as the trial's failure
                _tell(study, t, None, self.failed(t, e))
                if echo is not None:
                    echo(study, t.number)
                continue
            started.append(t)
            configs.append(tc)
            seeds.append(seed)
        return started, configs, seeds

    def failed(self, trial: optuna.Trial, e: BaseException) -> TrialFailed:
        """Record why a trial failed; the study goes on.

        Expected failures (:data:`EXPECTED_FAILURES`: divergence, out of memory, bad settings) get a
        one-line reason. Anything else is a bug until shown otherwise: its traceback goes to the
        trial's ``error.log``, the study's ``study.log`` and the ``gped_search`` logger.
        """
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        if isinstance(e, EXPECTED_FAILURES):
            log.warning("trial %d failed: %s", trial.number, reason)
        else:
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            rel = f"trials/{trial.number:05d}/error.log"
            with contextlib.suppress(OSError):  # the record below must be written even if the disk is full
                (self.artifact_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                (self.artifact_dir / rel).write_text(tb)
                with open(self.artifact_dir / "study.log", "a") as f:
                    f.write(f"--- trial {trial.number} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n{tb}")
            reason = f"unexpected {reason} (traceback in {rel})"
            log.error("trial %d failed unexpectedly: %s\n%s", trial.number, reason, tb)
        trial.set_user_attr("fail_reason", reason)
        return TrialFailed(reason)

    def finish(self, trial: optuna.Trial, tc: StudyConfig, result: StudentResult) -> tuple[float, ...]:
        model, rec, pruning = result.model, result.metrics, result.pruning
        record_curve(trial, result.curve)
        for k, v in rec.items():
            if is_scalar(v):
                trial.set_user_attr(k, v)
        trial.set_user_attr("family", tc.student.family.value)
        trial.set_user_attr("teacher_key", str(self.teacher.stats.get("teacher_key", "")))
        trial.set_user_attr("teacher_iterations", int(self.teacher.stats.get("iterations", 0)))
        trial.set_user_attr("lambda_g", tc.prune.lambda_g)
        if pruning:
            trial.set_user_attr("units_kept", pruning["units_kept"])
        for k, bound in self.cfg.search.constraints.items():
            trial.set_constraint(k, float(rec[k]) - float(bound))
        ckpt = self.artifact_dir / "trials" / f"{trial.number:05d}" / "student.pt"
        meta = {"study": self.cfg.name, "trial": trial.number, "params": dict(trial.params)}
        save_checkpoint(
            ckpt,
            model,
            config=to_dict(tc),
            metrics={k: v for k, v in rec.items() if is_scalar(v)},
            pruning=pruning and {k: v for k, v in pruning.items() if k != "history"},
            extra=meta,
        )
        publish_study_file(self.cfg, ckpt, self.artifact_dir)
        trial.set_user_attr("checkpoint", ckpt.relative_to(self.artifact_dir).as_posix())  # relative: movable
        try:
            trial.set_user_attr(
                "artifact_id",
                optuna.artifacts.upload_artifact(
                    artifact_store=self.store,
                    file_path=str(ckpt),
                    study_or_trial=trial,
                    mimetype="application/octet-stream",  # a torch file (".pt" guesses a SNES page table)
                ),
            )
        except Exception as e:  # the dashboard copy is a convenience, the checkpoint above is the record
            trial.set_user_attr("artifact_error", f"{type(e).__name__}: {e}"[:200])
        values = []
        for n in self.names:
            v = float(rec[n])
            if not math.isfinite(v):
                trial.set_user_attr("fail_reason", f"objective {n} is {v}")
                raise TrialFailed(f"objective {n} is {v}")
            values.append(v)
        return tuple(values)


def make_objective(
    cfg: StudyConfig,
    p: Prepared,
    teacher: TeacherResult,
    artifact_dir: Path,
    specs: dict[str, Spec],
    progress: bool = False,
):
    """Optuna's objective for one trial; ``progress`` shows the student's steps with its live loss."""
    runner = _TrialRunner(cfg, p, teacher, artifact_dir, specs)

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        try:
            return _objective(trial)
        except KeyboardInterrupt:  # Optuna tells it FAIL: say why, so the next run tries it again
            mark_interrupted(trial)
            raise

    def _objective(trial: optuna.Trial) -> tuple[float, ...]:
        tc, seed = runner.start(trial)
        try:
            result = train_trial(
                replace(p, cfg=tc),
                teacher,
                tc.student,
                tc.prune,
                seed=seed,
                latency_batch=cfg.search.latency_batch,
                progress=progress,
            )
        except OSError:
            raise
        except Exception as e:  # a FAIL with the reason, the study goes on
            raise runner.failed(trial, e) from e
        return runner.finish(trial, tc, result)

    return objective


def optimize_batched(
    study: optuna.Study,
    cfg: StudyConfig,
    p: Prepared,
    teacher: TeacherResult,
    artifact_dir: Path,
    specs: dict[str, Spec],
    *,
    n_trials: int | None,
    timeout: float | None,
    batch: int,
    progress: bool = False,
    announce: bool = False,
    nets: dict | None = None,
) -> None:
    """Ask-and-tell batch mode: ask ``batch`` trials, train their students in lockstep, tell each.

    With ``search.strategy: halving`` each group asked is a bracket of successive halving
    (:func:`gped_search.search.halving.run_bracket`, ``search.halving.n`` trials); with a supernet's
    ``nets`` (``search.strategy: supernet``) every student starts from its slice of them.

    Runs until the study has ``n_trials`` finished trials (COMPLETE or PRUNED), ``timeout`` seconds
    have passed (checked between batches) or, as ``study.optimize(n_trials=...)``, as many trials as
    were missing at the start have been tried (failures count, so a failing study ends). Each trial
    keeps its own parameters, seed (for the initial weights), metrics, checkpoint and outcome; a trial
    that fails is told FAIL with its reason
    while its batch-mates complete. RDB storages get heartbeats for every asked trial and stale trials
    are failed (and retried) before each batch; the journal storage uses the dead-worker check.
    ``announce`` prints one line per finished trial (:func:`.trial_lines.trial_line`).
    """
    halving = cfg.search.strategy.value == "halving"
    runner = _TrialRunner(cfg, p, teacher, artifact_dir, specs)
    start = time.monotonic()
    budget = None if n_trials is None else max(0, n_trials - finished(study))
    asked = 0
    bar = None
    if progress and budget is not None:
        bar = tqdm(total=budget, desc=f"trials (batches of {batch})", unit="trial")
    while True:
        left = None if n_trials is None else min(n_trials - finished(study), budget - asked)
        if (left is not None and left <= 0) or (timeout is not None and time.monotonic() - start >= timeout):
            break
        trials = _ask_group(study, cfg, batch, left, halving)
        if trials is None:
            break
        asked += len(trials)
        _run_group(study, cfg, p, teacher, runner, trials, bar, announce, nets, halving)
        if bar is not None:
            bar.update(len(trials))
        gc.collect()
    if bar is not None:
        bar.close()


def _ask_group(study: optuna.Study, cfg: StudyConfig, batch: int, left: int | None, halving: bool):
    """Fail stale trials, then ask the next batch or bracket (at most the grid's rest); None once the grid is used up."""
    from .halving import bracket_size

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    k = bracket_size(cfg, left) if halving else batch if left is None else min(batch, left)
    free = grid_left(study)
    if free == 0:
        return None
    k = k if free is None else min(k, free)
    with warnings.catch_warnings():  # "Heartbeat ... supposed to be used with Study.optimize": see _Heartbeat
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return [study.ask() for _ in range(k)]


def _run_group(study, cfg, p, teacher, runner, trials, bar, announce, nets, halving: bool) -> None:
    """Run one asked group (a halving bracket or a lockstep batch); on Ctrl-C mark its untold trials interrupted."""
    try:
        if halving:
            from .halving import run_bracket

            echo = echo_trial if announce else None
            run_bracket(study, cfg, p, teacher, runner, trials, tell=_tell, echo=echo, progress=bar is not None)
        else:
            _run_batch(study, cfg, p, teacher, runner, trials, bar, announce, nets)
    except KeyboardInterrupt:
        told = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        for t in trials:
            if t.number not in told:
                mark_interrupted(t)
                _tell(study, t, None, KeyboardInterrupt())
        raise


def _run_batch(study, cfg, p, teacher, runner, trials, bar, announce, nets=None) -> None:
    """Start, train in lockstep and tell one batch of asked trials; with a supernet's ``nets`` each
    student starts from its slice and is distilled for ``search.supernet.finetune_steps``."""
    with Heartbeat(study, trial_ids(trials)):
        started, configs, seeds = runner.start_all(study, trials, echo_trial if announce else None)
        results = (
            train_trials(
                p,
                teacher,
                configs,
                seeds,
                latency_batch=cfg.search.latency_batch,
                progress=bar is not None,
                **(_from_supernet(nets, p, configs) if nets else {}),
            )
            if started
            else []
        )
        for t, tc, res in zip(started, configs, results):
            if isinstance(res, StudentFailure):
                if isinstance(res.error, OSError):
                    raise res.error
                _tell(study, t, None, runner.failed(t, res.error))
            else:
                try:
                    _tell(study, t, runner.finish(t, tc, res), None)
                except TrialFailed as e:
                    _tell(study, t, None, e)
            if announce:
                echo_trial(study, t.number)


def _from_supernet(nets: dict, p: Prepared, configs: list[StudyConfig]) -> dict:
    """``train_trials`` arguments that start each student from its slice of its family's supernet."""
    from .supernet_run import extracted, finetune_steps

    return {"models": [extracted(nets, p, c) for c in configs], "steps": finetune_steps(p.cfg)}


def _tell(study: optuna.Study, trial: optuna.Trial, values, error: BaseException | None, state=None) -> None:
    try:
        if state is not None:
            study.tell(trial, state=state)
        elif error is None:
            study.tell(trial, values)
        else:
            study.tell(trial, state=TrialState.FAIL)
    except RuntimeError as e:
        # GridSampler.after_trial calls study.stop() when the grid is used up, which only works inside
        # study.optimize; the trial's state and values are stored all the same (Optuna's tell).
        if "Study.stop" not in str(e):
            raise


INTERRUPTED = "interrupted (Ctrl-C or a stop signal); its parameters are tried again on the next run"


def mark_interrupted(trial: optuna.Trial) -> None:
    """Record on a trial stopped by the user that it was interrupted (not a failure of its own)."""
    with contextlib.suppress(Exception):  # the storage may refuse a finished trial; the run is stopping anyway
        trial.set_user_attr("fail_reason", INTERRUPTED)
        trial.set_user_attr("interrupted", True)


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Enqueue the parameters of every interrupted trial not yet retried (the retry records ``retry_of``)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    out = []
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            out.append(t.number)
    return out


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
