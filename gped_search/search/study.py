"""The Optuna search study: one shared teacher, many students, Pareto fronts.

``run_study`` opens (or resumes) the study named in the study file, makes sure the teacher artifact
exists (sampled once per study, under a file lock, shared by every trial and worker), and runs trials:
sample an architecture -> build -> distil (group LASSO when lambda_g > 0) -> prune -> fine-tune ->
evaluate quality and cost. Objectives are returned to Optuna, every scalar metric is a user
attribute, constraints go through ``trial.set_constraint`` and the student checkpoint is written to
the study's artifact folder (and to Optuna's artifact store, so optuna-dashboard lists it).

Storage: a SQLite file in the report folder for one process; a journal file for ``workers > 1``
on one machine (SQLite is not for parallel writers); any RDB URL (PostgreSQL, MySQL) across
machines, with Optuna's heartbeat and ``RetryHeartbeatStaleTrialCallback``. The journal storage has
no heartbeat, so a running trial whose worker process (same host) no longer exists is failed and
re-enqueued by the next worker that starts or begins a trial.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import math
import multiprocessing
import os
import re
import shutil
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd
import torch
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import TrialState
from tqdm.auto import tqdm

from gped_search.api import Prepared, prepare, sample_teacher, train_trial, train_trials, trial_seed
from gped_search.config import StudyConfig, chain_settings, settings_digest, to_dict
from gped_search.distill.loop import TeacherResult
from gped_search.export import save_checkpoint
from gped_search.posterior.artifact import ArtifactError, load_teacher, save_teacher
from gped_search.posterior.checkpoint import pid_alive as _alive
from gped_search.report.tables import pareto_front
from gped_search.search.space import Spec, grid_space, parse_space, suggest

__all__ = ["StudyError", "storage_url", "mask_url", "open_storage", "make_sampler", "search_seed", "teacher_key",
           "ensure_teacher", "open_study", "run_study", "trials_frame", "study_status", "fail_dead_trials",
           "teacher_seconds_saved", "optimize_batched", "TEACHER_FILE", "calibrate_front", "CHAIN_DIR"]

TEACHER_FILE = "teacher.pt"


class StudyError(RuntimeError):
    """A study cannot be opened or run (missing, mismatched settings, storage problems)."""


class TrialFailed(RuntimeError):
    """A trial failed for a recorded reason; the study goes on."""


# --------------------------------------------------------------------------- storage

def storage_url(cfg: StudyConfig, override: str | None = None, workers: int = 1) -> str:
    """The study's storage: ``--storage``, the study file's, else a file in the report folder."""
    url = override or cfg.search.storage
    if url:
        return url
    out = cfg.out_dir.resolve()
    journal, sqlite = out / "study.journal", out / "study.db"
    if workers > 1 or (journal.exists() and not sqlite.exists()):
        return f"journal:///{journal}"
    return f"sqlite:///{sqlite}"


def mask_url(url: str) -> str:
    """Hide a password in ``scheme://user:password@host`` URLs (logs, reports, status)."""
    return re.sub(r"(://[^:/]*):[^@]*@", r"\1:***@", url)  # user as SQLAlchemy parses it: may be empty


def _seconds_env(name: str, default: int) -> int:
    """A positive whole number of seconds from the environment (heartbeat settings), else ``default``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise StudyError(f"{name}={raw!r}: give a whole number of seconds >= 1")
    return int(raw)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A journal file (``journal:///path`` or ``*.journal``) or an RDB storage with heartbeats.

    Server databases get Optuna's heartbeat (every ``$GPED_HEARTBEAT_INTERVAL`` s, default 30) and a
    trial silent for ``$GPED_GRACE_PERIOD`` s (default 90) is failed and retried (up to 3 times).
    SQLite gets none: it is for one process on one machine, where the dead-pid check covers crashes.
    """
    if url.startswith("journal://") or url.endswith(".journal"):
        path = Path(url.removeprefix("journal://"))  # journal:///abs/file or journal://relative/file
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    interval, grace = _seconds_env("GPED_HEARTBEAT_INTERVAL", 30), _seconds_env("GPED_GRACE_PERIOD", 90)
    for attempt in range(6):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental": keep stderr to the one error line
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, heartbeat_interval=interval, grace_period=grace,
                                  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
        except Exception as e:  # driver missing, server down, bad URL
            # Workers starting together on an empty database race to create Optuna's tables
            # (PostgreSQL's CREATE TABLE is not atomic against itself): the losers try again.
            if attempt < 5 and (type(e).__name__ == "IntegrityError" or "already exists" in str(e)):
                time.sleep(0.2 + 0.3 * attempt)
                continue
            raise StudyError(f"cannot open storage {mask_url(url)}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def search_seed(cfg: StudyConfig) -> int:
    """The seed of the sampler and of the trials' students: ``search.seed``, else the study seed."""
    return cfg.seed if cfg.search.seed is None else cfg.search.seed


def make_sampler(cfg: StudyConfig, specs: dict[str, Spec], seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded with ``seed`` (default: the study seed)."""
    s, seed = cfg.search, search_seed(cfg) if seed is None else seed
    if s.sampler == "grid":
        return optuna.samplers.GridSampler(grid_space(specs, len(cfg.student.widths)), seed=seed)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=min(50, max(4, (s.n_trials or 50) // 4)))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, (s.n_trials or 20) // 2)),
                                      multivariate=True, constant_liar=True)


# --------------------------------------------------------------------------- the teacher, once per study

CHAIN_DIR = "teacher.chain"
"""Folder (in the study's report folder) of the teacher chain's checkpoints and progress note."""

def teacher_key(cfg: StudyConfig) -> str:
    """Digest of every setting the teacher chain depends on, except its length.

    A teacher is identified by (key, iterations): a longer run of the same chain has the same key,
    and a chain is extended by raising ``teacher.iterations``. How the step runs (``cuda_graph``)
    and how often it is checked or checkpointed do not change the posterior it samples.
    """
    d = chain_settings(cfg)
    return settings_digest({"seed": cfg.seed, "data": d["data"], "teacher": d["teacher"],
                            "targets": d["distill"]["targets"], "temperature": d["distill"]["temperature"]})


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released by the OS if the holder dies
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sibling_teacher(artifact_dir: Path, key: str) -> Path | None:
    """A teacher artifact with the same key and length in another study folder of the report folder."""
    for sidecar in sorted(artifact_dir.parent.glob(f"*/{TEACHER_FILE}.key")):
        other = sidecar.with_name(TEACHER_FILE)
        if sidecar.parent == artifact_dir or not other.is_file() or \
                not other.with_name(TEACHER_FILE + ".sha256").is_file():
            continue
        with contextlib.suppress(OSError):
            if sidecar.read_text().strip() == key:
                return other
    return None


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (artifacts are never modified in place: they are replaced), else copy."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def ensure_teacher(p: Prepared, artifact_dir: Path, progress: bool = True, restart: bool = False
                   ) -> tuple[TeacherResult, dict]:
    """Load the study's teacher artifact, or sample (resume, extend) and store it, one process at a time.

    A study whose folder has no artifact yet first looks for one with the same teacher key and
    length (same seed, data, teacher and target settings) in the other study folders of its report
    folder, e.g. the grid baseline next to the search, and copies it (checked against its SHA-256)
    instead of sampling the same chain again. Otherwise the chain is sampled with checkpoints in
    ``teacher.chain/``: a worker that died mid-chain left its lock to the OS, and the next one
    resumes from the newest checkpoint. An artifact shorter than ``teacher.iterations`` is extended
    from its chain's final state; ``restart`` discards the chain checkpoints first.
    """
    path = artifact_dir / TEACHER_FILE
    key = teacher_key(p.cfg)
    want = p.cfg.teacher.iterations
    stamp = f"{key} {want}"
    reused = extended = None
    with _file_lock(artifact_dir / (TEACHER_FILE + ".lock")):
        if not path.exists():
            src = _sibling_teacher(artifact_dir, stamp)
            if src is not None:
                for suffix in ("", ".sha256"):
                    _link_or_copy(src.with_name(TEACHER_FILE + suffix), artifact_dir / (TEACHER_FILE + ".part" + suffix))
                # the checksum first, then the artifact: a crash leaves no artifact without its checksum
                os.replace(artifact_dir / (TEACHER_FILE + ".part.sha256"), path.with_name(TEACHER_FILE + ".sha256"))
                os.replace(artifact_dir / (TEACHER_FILE + ".part"), path)
                reused = str(src)
        sampled = False
        teacher = None
        if path.exists():
            teacher = load_teacher(path, p.device)
            made, its = teacher.stats.get("teacher_key"), int(teacher.stats.get("iterations", 0))
            if made != key:
                raise ArtifactError(f"{path}: made with other data/teacher settings (key {made} != {key}); "
                                    f"use a new study name or delete the artifact")
            if its > want:
                raise ArtifactError(f"{path}: the teacher ran {its} iterations, more than teacher.iterations={want}; "
                                    f"a chain can be extended, not shortened (set teacher.iterations >= {its})")
            if its < want:
                extended, teacher = its, None
                print(f"teacher: extending the chain from {its} to {want} iterations", file=sys.stderr)
        if teacher is None:
            teacher = sample_teacher(p, progress=progress, checkpoint_dir=artifact_dir / CHAIN_DIR, key=key,
                                     restart=restart)
            teacher.stats["teacher_key"] = key
            if extended is not None:
                teacher.stats["extended_from"] = extended
            save_teacher(path, teacher, to_dict(p.cfg))
            sampled = True
        sidecar = path.with_name(TEACHER_FILE + ".key")  # lets sibling studies find this artifact
        if not sidecar.is_file() or sidecar.read_text().strip() != stamp:
            sidecar.write_text(stamp + "\n")
    info = {"teacher_artifact": str(path), "teacher_sha256": (path.parent / (path.name + ".sha256")).read_text().strip(),
            "teacher_sampled_here": sampled, "teacher_key": key, "teacher_iterations": int(teacher.stats["iterations"]),
            "teacher_copied_from": reused, "teacher_extended_from": extended}
    if reused:
        print(f"teacher: reusing {reused} (same teacher settings)", file=sys.stderr)
    return teacher, info


# --------------------------------------------------------------------------- study

def open_study(cfg: StudyConfig, storage: str | None = None, *, create: bool = True,
               workers: int = 1) -> optuna.Study:
    url = storage_url(cfg, storage, workers)
    if not create and url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///").split("?")[0]).is_file():
        # opening would create an empty database, which then shadows a study.journal (storage_url)
        raise StudyError(f"no study {cfg.name!r} in {mask_url(url)} (no such file); run `gped-search run` first")
    st = open_storage(url)
    directions = list(cfg.search.objectives.values())
    names = list(cfg.search.objectives)
    if not create:
        try:
            return optuna.load_study(study_name=cfg.name, storage=st)
        except KeyError:
            raise StudyError(f"no study {cfg.name!r} in {mask_url(url)}; run `gped-search run` first") from None
    specs = parse_space(cfg.search.space)
    study = optuna.create_study(study_name=cfg.name, storage=st, directions=directions,
                                sampler=make_sampler(cfg, specs), load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions or \
            study.user_attrs.get("objectives", names) != names:
        raise StudyError(f"study {cfg.name!r} in {mask_url(url)} has other objectives "
                         f"({study.user_attrs.get('objectives')}); use a new study name")
    if "objectives" not in study.user_attrs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
        study.set_user_attr("objectives", names)
        study.set_user_attr("config", to_dict(cfg))
    return study


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose worker (on this host) is gone, and enqueue their parameters again."""
    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = t.user_attrs.get("worker", "")
        if ":" not in w:
            continue
        h, pid = w.rsplit(":", 1)
        if h != host or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", f"worker {w} died during the trial")
            if not study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except (RuntimeError, ValueError):  # another worker got there first
            continue
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        failed.append(t.number)
    return failed


def _scalar(v) -> bool:
    return isinstance(v, (bool, int, float, str)) and not (isinstance(v, float) and not math.isfinite(v))


class _TrialRunner:
    """What a trial does around training: sample its config, record metrics, checkpoint, objectives."""

    def __init__(self, cfg: StudyConfig, p: Prepared, teacher: TeacherResult, artifact_dir: Path,
                 specs: dict[str, Spec]):
        self.cfg, self.p, self.teacher, self.artifact_dir, self.specs = cfg, p, teacher, artifact_dir, specs
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

    @staticmethod
    def failed(trial: optuna.Trial, e: BaseException) -> TrialFailed:
        """Record why a trial failed (divergence, shape trouble, ...); the study goes on."""
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        trial.set_user_attr("fail_reason", reason)
        print(f"trial {trial.number} failed: {reason}", file=sys.stderr)
        return TrialFailed(reason)

    def finish(self, trial: optuna.Trial, tc: StudyConfig, model, rec: dict) -> tuple[float, ...]:
        pruning = rec.pop("_pruning")
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
        save_checkpoint(ckpt, model, config=to_dict(tc), metrics={k: v for k, v in rec.items() if _scalar(v)},
                        pruning=pruning and {k: v for k, v in pruning.items() if k != "history"}, extra=meta)
        trial.set_user_attr("checkpoint", str(ckpt))
        try:
            trial.set_user_attr("artifact_id", optuna.artifacts.upload_artifact(
                artifact_store=self.store, file_path=str(ckpt), study_or_trial=trial))
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


def make_objective(cfg: StudyConfig, p: Prepared, teacher: TeacherResult, artifact_dir: Path,
                   specs: dict[str, Spec]):
    runner = _TrialRunner(cfg, p, teacher, artifact_dir, specs)

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        tc, seed = runner.start(trial)
        try:
            model, rec = train_trial(replace(p, cfg=tc), teacher, tc.student, tc.prune, seed=seed,
                                     latency_batch=cfg.search.latency_batch)
        except OSError:
            raise
        except Exception as e:  # a FAIL with the reason, the study goes on
            raise runner.failed(trial, e) from e
        return runner.finish(trial, tc, model, rec)

    return objective


class _Heartbeat:
    """Heartbeats for asked trials (ask-and-tell has none of ``study.optimize``'s): RDB storages only."""

    def __init__(self, study: optuna.Study, trial_ids: list[int]):
        st = study._storage
        self.interval = st.get_heartbeat_interval() if isinstance(st, BaseHeartbeat) else None
        self.storage, self.ids, self.stop = st, trial_ids, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True) if self.interval else None

    def _beat(self) -> None:
        while True:
            for i in self.ids:
                with contextlib.suppress(Exception):  # a finished trial refuses heartbeats
                    self.storage.record_heartbeat(i)
            if self.stop.wait(self.interval):
                return

    def __enter__(self):
        if self.thread:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.thread:
            self.stop.set()
            self.thread.join()


def optimize_batched(study: optuna.Study, cfg: StudyConfig, p: Prepared, teacher: TeacherResult,
                     artifact_dir: Path, specs: dict[str, Spec], *, n_trials: int | None, timeout: float | None,
                     batch: int, progress: bool = False) -> None:
    """Ask-and-tell batch mode: ask ``batch`` trials, train their students in lockstep, tell each.

    Runs until the study has ``n_trials`` finished trials (COMPLETE or PRUNED), ``timeout`` seconds
    have passed (checked between batches) or, as ``study.optimize(n_trials=...)``, as many trials as
    were missing at the start have been tried (failures count, so a failing study ends). Each trial keeps its own parameters, seed (for the
    initial weights), metrics, checkpoint and outcome; a trial that fails is told FAIL with its reason
    while its batch-mates complete. RDB storages get heartbeats for every asked trial and stale trials
    are failed (and retried) before each batch; the journal storage uses the dead-worker check.
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
        grid_left = _grid_left(study)
        if grid_left is not None:
            if grid_left == 0:
                break
            k = min(k, grid_left)
        with warnings.catch_warnings():  # "Heartbeat ... supposed to be used with Study.optimize": see _Heartbeat
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trials = [study.ask() for _ in range(k)]
        asked += k
        with _Heartbeat(study, [t._trial_id for t in trials]):
            started, configs, seeds = [], [], []
            for t in trials:
                try:
                    tc, seed = runner.start(t)
                except Exception as e:  # noqa: BLE001
                    _tell(study, t, None, runner.failed(t, e))
                    continue
                started.append(t)
                configs.append(tc)
                seeds.append(seed)
            results = train_trials(p, teacher, configs, seeds, latency_batch=cfg.search.latency_batch,
                                   progress=bar is not None) if started else []
            for t, tc, res in zip(started, configs, results):
                if isinstance(res, OSError):
                    raise res
                if isinstance(res, Exception):
                    _tell(study, t, None, runner.failed(t, res))
                    continue
                try:
                    values = runner.finish(t, tc, *res)
                except TrialFailed as e:
                    _tell(study, t, None, e)
                    continue
                _tell(study, t, values, None)
        if bar is not None:
            bar.update(len(trials))
        gc.collect()
    if bar is not None:
        bar.close()


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


def _grid_left(study: optuna.Study) -> int | None:
    """Grid points no trial has taken yet (None for other samplers): a batch asks no more than these."""
    sampler = study.sampler
    if not isinstance(sampler, optuna.samplers.GridSampler):
        return None
    taken = {t.system_attrs.get("grid_id") for t in study.get_trials(deepcopy=False)
             if t.state != TrialState.WAITING}  # as Optuna's grid: a failed point counts as visited
    return len(set(range(len(sampler._all_grids))) - taken)


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _work(cfg: StudyConfig, url: str, n_trials: int | None, timeout: float | None, progress: bool,
          threads: int | None = None, teacher_progress: bool = True, worker: int = 0, restart: bool = False) -> None:
    """One worker: open the study, get the teacher, run trials until the study has ``n_trials``."""
    if threads:
        torch.set_num_threads(threads)
    # Optuna logs every failed trial with a traceback; ours get one line (above) and a fail_reason.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = open_study(cfg, url)
    n_before = len(study.get_trials(deepcopy=False))
    if n_before or worker:
        # A sampler seeded like the first run's (or a sibling worker's) would repeat its parameters.
        study.sampler = make_sampler(cfg, parse_space(cfg.search.space),
                                     seed=(search_seed(cfg) * 1_000_003 + n_before * 7919 + worker * 104_729 + 1)
                                     % (2**31 - 1))
    p = prepare(cfg)
    artifact_dir = cfg.out_dir.resolve()  # absolute paths in the records: workers may run elsewhere
    teacher, info = ensure_teacher(p, artifact_dir, progress=teacher_progress, restart=restart)
    if "teacher_artifact" not in study.user_attrs or info["teacher_sampled_here"] \
            or study.user_attrs.get("teacher_sha256") != info["teacher_sha256"]:
        study.set_user_attr("teacher_artifact", info["teacher_artifact"])
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
        optimize_batched(study, cfg, p, teacher, artifact_dir, specs, n_trials=target, batch=batch, progress=progress,
                         timeout=timeout if timeout is not None else cfg.search.timeout)
        return
    callbacks = [optuna.study.MaxTrialsCallback(target, states=(TrialState.COMPLETE, TrialState.PRUNED))] \
        if target is not None else []
    study.optimize(make_objective(cfg, p, teacher, artifact_dir, specs), n_trials=remaining,
                   timeout=timeout if timeout is not None else cfg.search.timeout, catch=(TrialFailed,),
                   callbacks=callbacks, show_progress_bar=progress and remaining is not None, gc_after_trial=True)


def _worker_main(cfg: StudyConfig, url: str, n_trials: int | None, timeout: float | None, threads: int,
                 worker: int = 0) -> None:
    _work(cfg, url, n_trials, timeout, progress=False, threads=threads, teacher_progress=False, worker=worker)


def run_study(cfg: StudyConfig, *, n_trials: int | None = None, timeout: float | None = None, workers: int = 1,
              storage: str | None = None, progress: bool = True, threads: int | None = None,
              restart: bool = False) -> optuna.Study:
    """Run (or resume) the study until it has ``n_trials`` finished trials or ``timeout`` passes.

    ``n_trials`` counts COMPLETE trials in the whole study, so re-running the same command after an
    interruption only adds the missing ones. With ``workers > 1`` the teacher is sampled first, then
    ``workers`` processes share the storage (they may finish up to ``workers - 1`` extra trials,
    ``(workers - 1) * search.batch`` in batch mode). ``threads``: torch intra-op threads per process
    (default: torch's own for one process, the CPU count divided by ``workers`` for several).
    The teacher chain resumes from its checkpoints (``restart`` discards them) and is extended when
    ``teacher.iterations`` grows; each trial records the teacher (key, iterations) it was trained against.
    """
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(cfg.out_dir, os.W_OK):
        raise StudyError(f"report folder {cfg.out_dir} is not writable")
    url = storage_url(cfg, storage, workers)
    if url.startswith("sqlite") and workers > 1:
        raise StudyError("SQLite is not for parallel writers: use --workers with the default (a journal file) "
                         "or a PostgreSQL/MySQL URL")
    cfg.out_dir.joinpath("study.yaml").write_text(_yaml(cfg))
    if workers <= 1:
        _work(cfg, url, n_trials, timeout, progress, threads=threads, teacher_progress=progress, restart=restart)
        study = open_study(cfg, url, create=False)
        calibrate_front(study, cfg)
        return study
    # Teacher first, in this process, so workers never race for it.
    open_study(cfg, url)
    ensure_teacher(prepare(cfg), cfg.out_dir.resolve(), progress=progress, restart=restart)
    ctx = multiprocessing.get_context("spawn")
    if threads:
        torch.set_num_threads(threads)
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    procs = [ctx.Process(target=_worker_main, args=(cfg, url, n_trials, timeout, threads, i), daemon=False)
             for i in range(workers)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()
    bad = [pr.exitcode for pr in procs if pr.exitcode != 0]
    if bad:
        raise StudyError(f"{len(bad)} of {workers} workers exited with an error (codes {bad}); "
                         f"the study's records are intact: re-run the command to resume")
    study = open_study(cfg, url, create=False)
    calibrate_front(study, cfg)
    return study


CALIBRATION_ATTR = "latency_calibration"


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
    from gped_search.export import load_checkpoint
    from gped_search.metrics.cost import calibrate_latency

    df = trials_frame(study, calibrated=False)
    front = df[df["on_front"]] if "on_front" in df else df.iloc[:0]
    models, shape = {}, None
    for _, row in front.iterrows():
        ckpt = row.get("checkpoint")
        if not isinstance(ckpt, str) or not Path(ckpt).is_file():
            continue
        model, _ = load_checkpoint(ckpt)
        models[int(row["number"])] = model
        shape = model.arch.in_shape
    if len(models) < 2:
        return {}
    device = str(row.get("latency_device") or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    cal = calibrate_latency(models, shape, batch=cfg.search.latency_batch, device=device,
                            threads=1 if device == "cpu" else None, rounds=rounds)
    out = {str(n): [c["median_ms"], c["p10_ms"], c["p90_ms"]] for n, c in cal.items()}
    study.set_user_attr(CALIBRATION_ATTR, out)
    return out


def _yaml(cfg: StudyConfig) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# --------------------------------------------------------------------------- reading a study

def trials_frame(study: optuna.Study, calibrated: bool = True) -> pd.DataFrame:
    """Every trial: number, state, parameters, objectives by name, every scalar metric, failure reason.

    With ``calibrated`` (default), latencies re-measured by :func:`calibrate_front` replace the
    trial-time figures (kept as ``latency_trial_ms``), and ``on_front`` treats latency differences
    inside their p10..p90 spread as ties.
    """
    names = study.user_attrs.get("objectives") or [f"objective_{i}" for i in range(len(study.directions))]
    cal = study.user_attrs.get(CALIBRATION_ATTR, {}) if calibrated else {}
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name,
               "duration_s": t.duration.total_seconds() if t.duration else None,
               "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete}
        row.update({f"param_{k}": v for k, v in t.params.items()})
        row.update({k: v for k, v in t.user_attrs.items() if _scalar(v) or v is None})
        if t.values is not None:
            row.update(dict(zip(names, t.values)))
        if str(t.number) in cal:
            row["latency_trial_ms"] = row.get("latency_ms")
            row["latency_ms"], row["latency_p10_ms"], row["latency_p90_ms"] = cal[str(t.number)]
            row["latency_calibrated"] = True
        cons = t.constraints
        row["feasible"] = all(c <= 0 for c in cons.values()) if cons else True
        row.setdefault("fail_reason", None)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["number", "state", *names, "feasible", "fail_reason", "on_front"])
    for n in names:
        if n not in df.columns:
            df[n] = float("nan")
    front = pareto_front(df, dict(zip(names, [d.name.lower() for d in study.directions])))
    df["on_front"] = df.index.isin(front.index)
    return df


def study_status(study: optuna.Study, url: str | None = None) -> dict:
    df = trials_frame(study)
    states = {s.name: 0 for s in TrialState}
    for s in df["state"]:
        states[s] += 1
    names = study.user_attrs.get("objectives", [])
    teacher = study.user_attrs.get("teacher", {})
    used = {}
    if "teacher_iterations" in df:
        done = df[df["state"] == "COMPLETE"]
        for (k, it), n in done.groupby(["teacher_key", "teacher_iterations"], dropna=True).size().items():
            used[f"{k}@{int(it)}"] = int(n)
    return {"study": study.study_name, "storage": mask_url(url) if url else None,
            "teachers_used": used,
            "trials": {k: v for k, v in states.items() if v}, "front_size": int(df["on_front"].sum()),
            "objectives": dict(zip(names, [d.name.lower() for d in study.directions])),
            "teacher": {k: teacher.get(k) for k in ("teacher_acc", "teacher_nll", "seconds", "iterations")
                        if k in teacher},
            "teacher_artifact": study.user_attrs.get("teacher_artifact")}


def teacher_seconds_saved(study: optuna.Study) -> dict:
    """How much re-sampling the teacher per trial would have cost on top of what the study spent.

    ``trial_seconds`` is the wall time during which at least one completed trial was running (the
    union of their intervals), so trials of one lockstep batch or of parallel workers are not counted
    twice; ``trial_seconds_sum`` adds the trials' own durations.
    """
    teacher = study.user_attrs.get("teacher", {})
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    secs = float(teacher.get("seconds", 0.0))
    spans = sorted((t.datetime_start, t.datetime_complete) for t in done if t.datetime_start and t.datetime_complete)
    busy, end = 0.0, None
    for a, b in spans:
        if end is None or a > end:
            busy += (b - a).total_seconds()
            end = b
        elif b > end:
            busy += (b - end).total_seconds()
            end = b
    total = sum(t.duration.total_seconds() for t in done if t.duration)
    return {"teacher_seconds": secs, "completed_trials": len(done), "trial_seconds": busy,
            "trial_seconds_sum": total, "saved_seconds": secs * max(0, len(done) - 1),
            "saved_fraction": (secs * max(0, len(done) - 1)) / max(1e-9, secs * len(done) + busy)}
