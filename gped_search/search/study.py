"""Running a search study: one shared teacher, many students, Pareto fronts.

``run_study`` opens (or resumes) the study named in the study file (:mod:`.storage`), makes sure the
teacher artifact exists (:mod:`.teacher`: sampled once per study, under a file lock, shared by every
trial and worker), and runs trials: sample an architecture -> build -> distil (group LASSO when
lambda_g > 0) -> prune -> fine-tune -> evaluate quality and cost. Objectives are returned to Optuna,
every scalar metric is a user attribute, constraints go through ``trial.set_constraint`` and the
student checkpoint is written to the study's artifact folder (and to Optuna's artifact store, so
optuna-dashboard lists it). Reading a finished study is :mod:`.results`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import multiprocessing
import os
import socket
import sys
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
from gped_search.engine import Prepared, prepare, train_trial, train_trials, trial_seed
from gped_search.errors import ConfigError, DivergenceError
from gped_search.posterior.result import TeacherResult
from gped_search.seeds import resume_sampler_seed

from .results import (
    CALIBRATION_ATTR,
    _scalar,
    study_path,
    study_status,
    teacher_seconds_saved,
    trials_frame,
)
from .samplers import make_sampler, search_seed
from .space import Spec, parse_space, suggest
from .storage import (
    Heartbeat,
    StudyError,
    fail_dead_trials,
    grid_left,
    mask_url,
    open_storage,
    open_study,
    optuna_quiet,
    record_curve,
    storage_url,
    trial_ids,
)
from .teacher import CHAIN_DIR, TEACHER_FILE, ensure_teacher, teacher_key

__all__ = [
    "StudyError",
    "storage_url",
    "mask_url",
    "open_storage",
    "make_sampler",
    "search_seed",
    "teacher_key",
    "ensure_teacher",
    "open_study",
    "run_study",
    "trials_frame",
    "study_status",
    "fail_dead_trials",
    "teacher_seconds_saved",
    "optimize_batched",
    "TEACHER_FILE",
    "calibrate_front",
    "CHAIN_DIR",
    "CALIBRATION_ATTR",
    "TrialFailed",
]


EXPECTED_FAILURES: tuple[type[BaseException], ...] = (
    DivergenceError,
    ConfigError,
    MemoryError,
    torch.cuda.OutOfMemoryError,
)
"""Failures a trial records as one line (a diverging student, out of memory, bad settings)."""

log = logging.getLogger(__name__)


class TrialFailed(RuntimeError):
    """A trial failed for a recorded reason; the study goes on."""


# --------------------------------------------------------------------------- the teacher, once per study


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
        self.store = optuna.artifacts.FileSystemArtifactStore(str(artifact_dir / "artifacts"))
        (artifact_dir / "artifacts").mkdir(parents=True, exist_ok=True)

    def start(self, trial: optuna.Trial) -> tuple[StudyConfig, int]:
        fail_dead_trials(trial.study)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        tc = suggest(trial, self.cfg, self.specs).cfg
        seed = trial_seed(search_seed(self.cfg), trial.number)
        trial.set_user_attr("seed", seed)
        return tc, seed

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

    def finish(self, trial: optuna.Trial, tc: StudyConfig, model, rec: dict) -> tuple[float, ...]:
        pruning = rec.pop("_pruning")
        record_curve(trial, rec.pop("_curve", []))
        for k, v in rec.items():
            if _scalar(v):
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
            metrics={k: v for k, v in rec.items() if _scalar(v)},
            pruning=pruning and {k: v for k, v in pruning.items() if k != "history"},
            extra=meta,
        )
        trial.set_user_attr("checkpoint", ckpt.relative_to(self.artifact_dir).as_posix())  # relative: movable
        try:
            trial.set_user_attr(
                "artifact_id",
                optuna.artifacts.upload_artifact(artifact_store=self.store, file_path=str(ckpt), study_or_trial=trial),
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
):
    runner = _TrialRunner(cfg, p, teacher, artifact_dir, specs)

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        tc, seed = runner.start(trial)
        try:
            model, rec = train_trial(
                replace(p, cfg=tc),
                teacher,
                tc.student,
                tc.prune,
                seed=seed,
                latency_batch=cfg.search.latency_batch,
            )
        except OSError:
            raise
        except Exception as e:  # a FAIL with the reason, the study goes on
            raise runner.failed(trial, e) from e
        return runner.finish(trial, tc, model, rec)

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
) -> None:
    """Ask-and-tell batch mode: ask ``batch`` trials, train their students in lockstep, tell each.

    Runs until the study has ``n_trials`` finished trials (COMPLETE or PRUNED), ``timeout`` seconds
    have passed (checked between batches) or, as ``study.optimize(n_trials=...)``, as many trials as
    were missing at the start have been tried (failures count, so a failing study ends). Each trial keeps its own parameters, seed (for the
    initial weights), metrics, checkpoint and outcome; a trial that fails is told FAIL with its reason
    while its batch-mates complete. RDB storages get heartbeats for every asked trial and stale trials
    are failed (and retried) before each batch; the journal storage uses the dead-worker check.
    ``announce`` prints one line per finished trial (:func:`trial_line`).
    """
    runner = _TrialRunner(cfg, p, teacher, artifact_dir, specs)
    start = time.monotonic()
    budget = None if n_trials is None else max(0, n_trials - _finished(study))
    asked = 0
    bar = None
    if progress and budget is not None:
        bar = tqdm(total=budget, desc=f"trials (batches of {batch})", unit="trial")
    while True:
        left = None if n_trials is None else min(n_trials - _finished(study), budget - asked)
        if (left is not None and left <= 0) or (timeout is not None and time.monotonic() - start >= timeout):
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        k = batch if left is None else min(batch, left)
        free = grid_left(study)
        if free is not None:
            if free == 0:
                break
            k = min(k, free)
        with warnings.catch_warnings():  # "Heartbeat ... supposed to be used with Study.optimize": see _Heartbeat
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trials = [study.ask() for _ in range(k)]
        asked += k
        with Heartbeat(study, trial_ids(trials)):
            started, configs, seeds = [], [], []
            for t in trials:
                try:
                    tc, seed = runner.start(t)
                except Exception as e:  # noqa: BLE001
                    _tell(study, t, None, runner.failed(t, e))
                    if announce:
                        _echo(study, t.number)
                    continue
                started.append(t)
                configs.append(tc)
                seeds.append(seed)
            results = (
                train_trials(
                    p,
                    teacher,
                    configs,
                    seeds,
                    latency_batch=cfg.search.latency_batch,
                    progress=bar is not None,
                )
                if started
                else []
            )
            for t, tc, res in zip(started, configs, results):
                if isinstance(res, OSError):
                    raise res
                if isinstance(res, Exception):
                    _tell(study, t, None, runner.failed(t, res))
                else:
                    try:
                        _tell(study, t, runner.finish(t, tc, *res), None)
                    except TrialFailed as e:
                        _tell(study, t, None, e)
                if announce:
                    _echo(study, t.number)
        if bar is not None:
            bar.update(len(trials))
        gc.collect()
    if bar is not None:
        bar.close()


def trial_line(study: optuna.Study, number: int) -> str:
    """One line for a finished trial: number, state, student, objectives, whether it is on the front."""
    from .results import trials_frame

    df = trials_frame(study, calibrated=False)
    row = df[df["number"] == number]
    if row.empty:
        return f"trial {number}: not in the study"
    r = row.iloc[0]
    if r["state"] != "COMPLETE":
        reason = r.get("fail_reason")
        return f"trial {number:>3}  {r['state'].lower():8s}  " + (reason if isinstance(reason, str) else "")
    names = study.user_attrs.get("objectives", [])
    vals = "  ".join(f"{n} {_short(n, r.get(n))}" for n in names)
    done = df[df["state"] == "COMPLETE"]
    front = f"on the front ({int(done['on_front'].sum())} of {len(done)})" if r.get("on_front") else "dominated"
    return f"trial {number:>3}  complete  {str(r.get('arch', '')):24s}  {vals}  {front}"


def _short(name: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if name.startswith("bytes"):
        return f"{v / 1e3:,.1f} kB" if v < 1e6 else f"{v / 1e6:,.2f} MB"
    if name.endswith("_ms"):
        return f"{v:.3g} ms"
    if name in ("params", "macs", "macs_conv_linear"):
        return f"{v:,.0f}"
    return f"{v:.4g}"


def _echo(study: optuna.Study, number: int) -> None:
    tqdm.write(trial_line(study, number), file=sys.stdout)


def _tell(study: optuna.Study, trial: optuna.Trial, values, error: BaseException | None) -> None:
    try:
        if error is None:
            study.tell(trial, values)
        else:
            study.tell(trial, state=TrialState.FAIL)
    except RuntimeError as e:
        # GridSampler.after_trial calls study.stop() when the grid is used up, which only works inside
        # study.optimize; the trial's state and values are stored all the same (Optuna's tell).
        if "Study.stop" not in str(e):
            raise


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _work(*args, **kwargs) -> None:
    """One worker: open the study, get the teacher, run trials until the study has ``n_trials``."""
    with optuna_quiet():
        _work_quiet(*args, **kwargs)


def _work_quiet(
    cfg: StudyConfig,
    url: str,
    n_trials: int | None,
    timeout: float | None,
    progress: bool,
    threads: int | None = None,
    teacher_progress: bool = True,
    worker: int = 0,
    restart: bool = False,
    announce: bool = False,
) -> None:
    if threads:
        torch.set_num_threads(threads)
    p = prepare(cfg)  # data first: a bad data root fails before a storage is created
    study = open_study(cfg, url)
    n_before = len(study.get_trials(deepcopy=False))
    if n_before or worker:
        # A sampler seeded like the first run's (or a sibling worker's) would repeat its parameters.
        study.sampler = make_sampler(
            cfg,
            parse_space(cfg.search.space),
            seed=resume_sampler_seed(search_seed(cfg), n_before, worker),
        )
    artifact_dir = cfg.out_dir.resolve()
    teacher, info = ensure_teacher(p, artifact_dir, progress=teacher_progress, restart=restart)
    if (
        "teacher_artifact" not in study.user_attrs
        or info["teacher_sampled_here"]
        or study.user_attrs.get("teacher_sha256") != info["teacher_sha256"]
    ):
        study.set_user_attr("teacher_artifact", Path(info["teacher_artifact"]).relative_to(artifact_dir).as_posix())
        study.set_user_attr("teacher_sha256", info["teacher_sha256"])
        study.set_user_attr("teacher", {k: v for k, v in {**teacher.metrics, **teacher.stats}.items() if _scalar(v)})
        if info["teacher_copied_from"]:
            study.set_user_attr("teacher_copied_from", info["teacher_copied_from"])
    fail_dead_trials(study)
    specs = parse_space(cfg.search.space)
    target = n_trials if n_trials is not None else cfg.search.n_trials
    remaining = None if target is None else max(0, target - _finished(study))
    if remaining == 0:
        return
    batch = cfg.search.batch
    if batch > 1:
        optimize_batched(
            study,
            cfg,
            p,
            teacher,
            artifact_dir,
            specs,
            n_trials=target,
            batch=batch,
            progress=progress,
            timeout=timeout if timeout is not None else cfg.search.timeout,
            announce=announce,
        )
        return
    callbacks = (
        [optuna.study.MaxTrialsCallback(target, states=(TrialState.COMPLETE, TrialState.PRUNED))]
        if target is not None
        else []
    )
    if announce:
        callbacks.append(lambda st, t: _echo(st, t.number))
    study.optimize(
        make_objective(cfg, p, teacher, artifact_dir, specs),
        n_trials=remaining,
        timeout=timeout if timeout is not None else cfg.search.timeout,
        catch=(TrialFailed,),
        callbacks=callbacks,
        show_progress_bar=progress and remaining is not None,
        gc_after_trial=True,
    )


def _worker_main(
    cfg: StudyConfig,
    url: str,
    n_trials: int | None,
    timeout: float | None,
    threads: int,
    worker: int = 0,
    announce: bool = False,
) -> None:
    _work(
        cfg,
        url,
        n_trials,
        timeout,
        progress=False,
        threads=threads,
        teacher_progress=False,
        worker=worker,
        announce=announce,
    )


def run_study(
    cfg: StudyConfig,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    storage: str | None = None,
    progress: bool = True,
    threads: int | None = None,
    restart: bool = False,
    announce: bool = False,
) -> optuna.Study:
    """Run (or resume) the study until it has ``n_trials`` finished trials or ``timeout`` passes.

    ``n_trials`` counts COMPLETE trials in the whole study, so re-running the same command after an
    interruption only adds the missing ones. With ``workers > 1`` the teacher is sampled first, then
    ``workers`` processes share the storage (they may finish up to ``workers - 1`` extra trials,
    ``(workers - 1) * search.batch`` in batch mode). ``threads``: torch intra-op threads per process
    (default: torch's own for one process, the CPU count divided by ``workers`` for several).
    The teacher chain resumes from its checkpoints (``restart`` discards them) and is extended when
    ``teacher.iterations`` grows; each trial records the teacher (key, iterations) it was trained against.
    ``announce`` prints one line per finished trial. A first run that fails before any trial (bad data
    root, unreachable storage) leaves no report folder behind.
    """
    created = not cfg.out_dir.exists()
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _run_study(cfg, n_trials, timeout, workers, storage, progress, threads, restart, announce)
    except BaseException:
        if created:
            _remove_if_unused(cfg.out_dir)
        raise


_SCAFFOLD = {"study.yaml", TEACHER_FILE + ".lock"}


def _remove_if_unused(folder: Path) -> None:
    """Remove a report folder this run created if it holds nothing but the run's scaffolding."""
    with contextlib.suppress(OSError):
        if {f.name for f in folder.iterdir()} <= _SCAFFOLD:
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()


def _run_study(
    cfg: StudyConfig, n_trials, timeout, workers, storage, progress, threads, restart, announce
) -> optuna.Study:
    if not os.access(cfg.out_dir, os.W_OK):
        raise StudyError(f"report folder {cfg.out_dir} is not writable")
    url = storage_url(cfg, storage, workers)
    if url.startswith("sqlite") and workers > 1:
        raise StudyError(
            "SQLite is not for parallel writers: use --workers with the default (a journal file) "
            "or a PostgreSQL/MySQL URL"
        )
    cfg.out_dir.joinpath("study.yaml").write_text(_yaml(cfg))
    if workers <= 1:
        _work(
            cfg,
            url,
            n_trials,
            timeout,
            progress,
            threads=threads,
            teacher_progress=progress,
            restart=restart,
            announce=announce,
        )
        study = open_study(cfg, url, create=False)
        calibrate_front(study, cfg)
        return study
    # Teacher first, in this process, so workers never race for it (data first: see _work).
    p = prepare(cfg)
    open_study(cfg, url)
    ensure_teacher(p, cfg.out_dir.resolve(), progress=progress, restart=restart)
    ctx = multiprocessing.get_context("spawn")
    if threads:
        torch.set_num_threads(threads)
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(cfg, url, n_trials, timeout, threads, i, announce),
            daemon=False,
        )
        for i in range(workers)
    ]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()
    bad = [pr.exitcode for pr in procs if pr.exitcode != 0]
    if bad:
        raise StudyError(
            f"{len(bad)} of {workers} workers exited with an error (codes {bad}); "
            f"the study's records are intact: re-run the command to resume"
        )
    study = open_study(cfg, url, create=False)
    calibrate_front(study, cfg)
    return study


def calibrate_front(study: optuna.Study, cfg: StudyConfig, rounds: int = 10) -> dict:
    """Re-measure the latency of the front's students together, in one calibration pass.

    Trial-time latencies were measured minutes apart under whatever else the machine was doing;
    here the front candidates (the front under the trial-time figures) are timed in interleaved,
    shuffled rounds (:func:`~gped_search.metrics.cost.calibrate_latency`). The result is stored as
    the study attribute ``latency_calibration`` (trial number -> [median, p10, p90] ms over rounds);
    :func:`trials_frame` then reports those figures as ``latency_ms``/``latency_p10_ms``/
    ``latency_p90_ms`` (the trial-time figure stays as ``latency_trial_ms``), and fronts treat latency
    differences inside the p10..p90 spread as ties. Only when latency is an objective.
    """
    if "latency_ms" not in study.user_attrs.get("objectives", []):
        return {}
    from gped_search.checkpoints import load_checkpoint
    from gped_search.metrics.cost import calibrate_latency

    df = trials_frame(study, calibrated=False)
    front = df[df["on_front"]] if "on_front" in df else df.iloc[:0]
    models, shape = {}, None
    for _, row in front.iterrows():
        ckpt = study_path(cfg.out_dir, row.get("checkpoint"))
        if ckpt is None or not ckpt.is_file():
            continue
        model, _ = load_checkpoint(ckpt)
        models[int(row["number"])] = model
        shape = model.arch.in_shape
    if len(models) < 2:
        return {}
    device = str(row.get("latency_device") or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    cal = calibrate_latency(
        models,
        shape,
        batch=cfg.search.latency_batch,
        device=device,
        threads=1 if device == "cpu" else None,
        rounds=rounds,
    )
    out = {str(n): [c["median_ms"], c["p10_ms"], c["p90_ms"]] for n, c in cal.items()}
    study.set_user_attr(CALIBRATION_ATTR, out)
    return out


def _yaml(cfg: StudyConfig) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
