"""Optuna storages and studies: where a study lives, opening it, and the private Optuna API.

Storage: a SQLite file in the report folder for one process; a journal file for ``workers > 1``
on one machine (SQLite is not for parallel writers); any RDB URL (PostgreSQL, MySQL) across
machines, with Optuna's heartbeat and ``RetryHeartbeatStaleTrialCallback``. The journal storage has
no heartbeat, so a running trial whose worker process (same host) no longer exists is failed and
re-enqueued by the next worker that starts or begins a trial.

This is the one module that touches Optuna's private API (``study._storage``, ``trial._trial_id``,
``GridSampler._all_grids``, ``optuna.storages._heartbeat``): :func:`trial_ids`, :func:`grid_left`,
:func:`fail_dead_trials` and :class:`Heartbeat` wrap it, and ``pyproject.toml`` bounds Optuna to the
versions tested.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import TrialState

from gped_search.config import StudyConfig, to_dict
from gped_search.config.space import parse_space
from gped_search.errors import StudyError  # noqa: F401  (raised here; re-exported)
from gped_search.files import pid_alive

from .locations import mask_url, storage_url
from .samplers import make_sampler

log = logging.getLogger(__name__)

__all__ = [
    "postgres_driver",
    "StudyError",
    "storage_url",
    "mask_url",
    "open_storage",
    "open_study",
    "fail_dead_trials",
    "trial_ids",
    "grid_left",
    "Heartbeat",
    "record_curve",
    "optuna_quiet",
]


def _seconds_env(name: str, default: int) -> int:
    """A positive whole number of seconds from the environment (heartbeat settings), else ``default``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise StudyError(f"{name}={raw!r}: give a whole number of seconds >= 1")
    return int(raw)


def postgres_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; the ``postgres`` extra installs psycopg2.

    Use whichever driver is installed; with neither, say what to install (instead of SQLAlchemy's
    "Failed to import DB access module").
    """
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    import importlib.util

    rest = url.split("://", 1)[1]
    if importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + rest
    if importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + rest
    raise StudyError(
        f"cannot open storage {mask_url(url)}: no PostgreSQL driver is installed; "
        "pip install 'gped-search[postgres]' (psycopg2) or psycopg"
    )


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
    driver_url = postgres_driver(url)  # messages show the user's URL
    interval, grace = (
        _seconds_env("GPED_HEARTBEAT_INTERVAL", 30),
        _seconds_env("GPED_GRACE_PERIOD", 90),
    )
    for attempt in range(6):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental": keep stderr to the one error line
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    driver_url,
                    heartbeat_interval=interval,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                )
        except Exception as e:  # driver missing, server down, bad URL
            # Workers starting together on an empty database race to create Optuna's tables
            # (PostgreSQL's CREATE TABLE is not atomic against itself): the losers try again.
            from sqlalchemy.exc import IntegrityError

            if attempt < 5 and (isinstance(e, IntegrityError) or "already exists" in str(e)):
                time.sleep(0.2 + 0.3 * attempt)
                continue
            raise StudyError(
                f"cannot open storage {mask_url(url)}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def open_study(cfg: StudyConfig, storage: str | None = None, *, create: bool = True, workers: int = 1) -> optuna.Study:
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
    study = optuna.create_study(
        study_name=cfg.name,
        storage=st,
        directions=directions,
        sampler=make_sampler(cfg, specs),
        load_if_exists=True,
    )
    if [d.name.lower() for d in study.directions] != directions or study.user_attrs.get("objectives", names) != names:
        raise StudyError(
            f"study {cfg.name!r} in {mask_url(url)} has other objectives "
            f"({study.user_attrs.get('objectives')}); use a new study name"
        )
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
        if h != host or not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
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


def trial_finished(trial: optuna.Trial) -> bool:
    """Whether an asked trial has been told (any finished state), read from the storage."""
    return trial.study._storage.get_trial(trial._trial_id).state.is_finished()


def record_curve(trial: optuna.Trial, curve: list[tuple[int, float]]) -> None:
    """A trial's learning curve as Optuna intermediate values (optuna-dashboard draws them).

    ``Trial.report`` refuses multi-objective studies, so the values go to the storage directly.
    """
    for step, value in curve:
        if math.isfinite(value):
            trial.study._storage.set_trial_intermediate_value(trial._trial_id, int(step), float(value))


@contextlib.contextmanager
def optuna_quiet():
    """Optuna's own trial lines at ERROR only while a study runs (ours say the same in one line and
    keep tracebacks for real failures); the caller's verbosity is restored afterwards."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def trial_ids(trials: list[optuna.Trial]) -> list[int]:
    """Storage ids of asked trials (for heartbeats)."""
    return [t._trial_id for t in trials]


def grid_left(study: optuna.Study) -> int | None:
    """Trials a grid study can still ask (None for other samplers): the grid points no trial has taken
    yet, plus the enqueued (WAITING) ones, such as the retry of an interrupted point; a batch asks no
    more than these."""
    sampler = study.sampler
    if not isinstance(sampler, optuna.samplers.GridSampler):
        return None
    trials = study.get_trials(deepcopy=False)
    taken = {t.system_attrs.get("grid_id") for t in trials if t.state != TrialState.WAITING}
    waiting = sum(t.state == TrialState.WAITING for t in trials)  # asked first, whatever their point
    return len(set(range(len(sampler._all_grids))) - taken) + waiting  # a failed point counts as visited


class Heartbeat:
    """Heartbeats for asked trials (ask-and-tell has none of ``study.optimize``'s): RDB storages only."""

    def __init__(self, study: optuna.Study, trial_ids: list[int]):
        st = study._storage
        self.interval = st.get_heartbeat_interval() if isinstance(st, BaseHeartbeat) else None
        self.storage, self.ids, self.stop = st, trial_ids, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True) if self.interval else None

    def _beat(self) -> None:
        while True:
            for i in self.ids:
                try:
                    self.storage.record_heartbeat(i)
                except Exception as e:  # noqa: BLE001 - a finished trial may refuse; never kill the batch
                    log.debug("heartbeat of trial id %s: %s: %s", i, type(e).__name__, e)
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
