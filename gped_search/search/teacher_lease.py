"""The study's teacher lease and where its chain stands, read without torch (``status`` on any machine).

:func:`teacher_lease` is the row in the study's database that says who samples the teacher
(:class:`~gped_search.store.lease.Lease`); :func:`store_chain_status` reads the chain's progress note
and newest checkpoint from the store, and the lease's holder. How a worker takes the lease and samples:
:mod:`.teacher_store`.
"""

from __future__ import annotations

import json
import time

from gped_search.posterior.chain_checkpoint import CHAIN_DIR, progress_record
from gped_search.store.chain_sync import store_generations
from gped_search.store.files import get_text
from gped_search.store.lease import Lease, supports_lease
from gped_search.store.urls import study_store

__all__ = ["teacher_lease", "store_chain_status"]


def teacher_lease(url: str, study_name: str, create: bool = True) -> Lease | None:
    """The study's teacher lease in its database, or None for a journal-file storage."""
    if not supports_lease(url):
        return None
    from .storage import postgres_driver  # postgresql:// -> the driver that is installed, as the storage does

    return Lease(postgres_driver(url), f"{study_name}/teacher", create=create)


def store_chain_status(cfg, url: str, stale_seconds: float = 600.0) -> dict | None:
    """Where the study's teacher chain stands, read from the store and the lease (``status`` on any machine).

    The shape of :func:`~gped_search.posterior.chain_checkpoint.chain_status`, plus ``holder`` (``host:pid`` of
    the worker sampling it). ``running`` needs a live lease (or, without a database, a fresh progress note)."""
    store = study_store(cfg)
    if store is None:
        return None
    try:
        note = json.loads(get_text(store, f"{CHAIN_DIR}/progress.json") or "null") or {}
    except ValueError:
        note = {}
    gens = store_generations(store, CHAIN_DIR)
    if not note and not gens:
        return None
    lease = teacher_lease(url, cfg.name, create=False)  # only read: status creates nothing
    try:
        holder = lease.current() if lease is not None else None
    finally:
        if lease is not None:
            lease.close()
    state, ckpt, total = note.get("state", "paused"), gens[-1] if gens else None, note.get("total")
    if state == "running" and (
        holder is None if lease is not None else time.time() - note.get("updated", 0) > stale_seconds
    ):
        state = "paused"
    done_it = note.get("iteration", ckpt or 0) if state != "paused" else ckpt or 0
    return {
        **progress_record(state, done_it, total, ckpt, note),
        "holder": holder[0].rsplit(":", 1)[0] if holder else None,
    }
