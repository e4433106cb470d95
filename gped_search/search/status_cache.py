"""``gped-search status`` without opening Optuna when nothing changed.

Opening a study imports Optuna, SQLAlchemy and Alembic (about 0.6 s of a 1 s ``status`` on an idle 2-core
machine). The status read from a study is saved beside its storage file with the file's fingerprint
(:func:`~gped_search.search.locations.storage_fingerprint`), taken *before* the study is read: any write
after that moment changes the fingerprint, so a saved status is never newer than what it claims and a
stale one is never shown. Database servers have no file to fingerprint and are always read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gped_search.config import StudyConfig

from .locations import mask_url, storage_file, storage_fingerprint, storage_url

__all__ = ["cached_study_status", "remember_status", "save_status", "saved_trials", "status_cache_path", "trial_index"]


def status_cache_path(url: str) -> Path | None:
    path = storage_file(url)
    return None if path is None else path.with_name(path.name + ".status.json")


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def trial_index(study) -> dict:
    """How many trials ``study`` numbers, and the state (and failure reason) of each one not complete."""
    trials = study.get_trials(deepcopy=False)
    other = {
        str(t.number): [t.state.name, t.user_attrs.get("fail_reason")] for t in trials if t.state.name != "COMPLETE"
    }
    return {"count": len(trials), "not_complete": other}


def save_status(url: str, name: str, fingerprint: list[int] | None, status: dict, study) -> None:
    """Record ``status`` (and :func:`trial_index`) of ``study`` named ``name``, as read when the storage had
    ``fingerprint`` (best effort: a folder that cannot be written only makes the next ``status`` slower)."""
    path = status_cache_path(url)
    if path is None or fingerprint is None or not path.parent.is_dir():
        return
    data = _load(path)
    data[name] = {
        "fingerprint": fingerprint,
        "status": {k: v for k, v in status.items() if k != "storage"},
        "trials": trial_index(study),
    }
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, default=str))
        os.replace(tmp, path)
    except OSError:  # a read-only copy of a study: status still works, only slower
        tmp.unlink(missing_ok=True)


def _fresh(url: str, name: str) -> dict | None:
    """The saved entry of study ``name`` when the storage file has not changed since it was read."""
    fp, path = storage_fingerprint(url), status_cache_path(url)
    if fp is None or path is None:
        return None
    hit = _load(path).get(name)
    ok = isinstance(hit, dict) and hit.get("fingerprint") == fp
    return hit if ok and isinstance(hit.get("status"), dict) and isinstance(hit.get("trials"), dict) else None


def saved_trials(cfg: StudyConfig, storage: str | None = None) -> dict | None:
    """:func:`trial_index` of the study as saved, if still current (else None: open the study)."""
    hit = _fresh(storage_url(cfg, storage), cfg.name)
    return None if hit is None else hit["trials"]


def cached_study_status(cfg: StudyConfig, storage: str | None = None) -> dict:
    """The study's :func:`~gped_search.search.results.study_status`, from the saved copy when the storage
    file has not changed since it was read; raises ``StudyError`` when there is no such study."""
    url = storage_url(cfg, storage)
    hit = _fresh(url, cfg.name)
    if hit is not None:
        return {**hit["status"], "storage": mask_url(url)}
    from .storage import open_study

    fp = storage_fingerprint(url)  # before reading: a later write is never hidden by this copy
    return remember_status(url, cfg.name, fp, open_study(cfg, storage, create=False))


def remember_status(url: str, name: str, fingerprint: list[int] | None, study) -> dict:
    """Read ``study``'s status and save it under ``fingerprint``, taken before the study was opened (a
    command that has the study open anyway, so that the next ``status`` need not open it)."""
    from .results import study_status

    st = study_status(study, url)
    save_status(url, name, fingerprint, st, study)
    return st
