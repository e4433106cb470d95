"""The study's teacher across machines without a shared filesystem: the object store and a database lease.

With ``search.artifacts`` set, the store is where the teacher lives; each worker's report folder is
only its local cache. :func:`ensure_shared_teacher`:

1. if the store holds the teacher for these settings and length (``teacher.pt.key``, written last),
   downloads it (checked against its stored checksum) and loads it;
2. else takes the study's teacher lease in the database (:class:`~gped_search.store.lease.Lease`),
   pulls the store's newest chain checkpoint into the local chain folder, and samples (resumes,
   extends) the chain there as :func:`~.teacher.ensure_teacher` does, while a thread renews the lease
   and copies each new checkpoint to the store; then uploads the artifact, its checksum and its key;
3. else (another worker holds the lease) waits and looks again. A worker that dies while sampling
   stops renewing; once its lease expires the next worker resumes the chain from the store.

With a journal-file storage (one machine) there is no database to hold a lease: the local file lock
of :func:`~.teacher.ensure_teacher` orders the workers, which share the report folder there anyway.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from gped_search.engine import Prepared
from gped_search.posterior.result import TeacherResult
from gped_search.store import get_file, put_file, study_store
from gped_search.store.chain_sync import ChainMirror, clear_store_chain, pull_chain
from gped_search.store.files import get_text, put_text
from gped_search.store.lease import Lease

from .teacher import CHAIN_DIR, TEACHER_FILE, ensure_teacher, teacher_key
from .teacher_lease import teacher_lease

log = logging.getLogger(__name__)

__all__ = ["ensure_shared_teacher", "KEY_FILE"]

KEY_FILE = TEACHER_FILE + ".key"
POLL_SECONDS = 1.0


def _published(store, stamp: str) -> bool:
    text = get_text(store, KEY_FILE)
    return text is not None and text.strip() == stamp


def _fetch_teacher(store, artifact_dir: Path) -> bool:
    """The store's teacher artifact into the local folder (verified); False when the store has none."""
    return get_file(store, TEACHER_FILE, artifact_dir / TEACHER_FILE) is not None


def ensure_shared_teacher(
    p: Prepared, artifact_dir: Path, url: str, progress: bool = True, restart: bool = False
) -> tuple[TeacherResult, dict]:
    """:func:`~.teacher.ensure_teacher`, through the study's store and lease when ``search.artifacts`` is set."""
    store = study_store(p.cfg)
    if store is None:
        return ensure_teacher(p, artifact_dir, progress=progress, restart=restart)
    stamp = f"{teacher_key(p.cfg)} {p.cfg.teacher.iterations}"
    lease = teacher_lease(url, p.cfg.name)
    said = False
    try:
        while True:
            if not restart and _published(store, stamp):
                _fetch_teacher(store, artifact_dir)
                return ensure_teacher(p, artifact_dir, progress=False)
            if lease is None or lease.try_acquire():
                return _sample(p, artifact_dir, store, lease, stamp, progress, restart)
            if not said:
                holder = lease.current()
                log.info("teacher: %s is sampling it; waiting", holder[0] if holder else "another worker")
                said = True
            time.sleep(POLL_SECONDS)
    finally:
        if lease is not None:
            lease.close()


def _sample(p, artifact_dir: Path, store, lease: Lease | None, stamp: str, progress: bool, restart: bool):
    """Holding the lease: resume the chain from the store, sample, publish the artifact (key last)."""
    renewing = lease.renewing() if lease is not None else contextlib.nullcontext()
    with renewing:
        if not restart and _published(store, stamp):  # finished while we waited for the lease
            _fetch_teacher(store, artifact_dir)
            return ensure_teacher(p, artifact_dir, progress=False)
        local_chain = artifact_dir / CHAIN_DIR
        local_chain.mkdir(parents=True, exist_ok=True)
        if restart:
            clear_store_chain(store, CHAIN_DIR)
        else:
            _fetch_teacher(store, artifact_dir)  # a shorter teacher of these settings: ensure_teacher extends it
            it = pull_chain(store, CHAIN_DIR, local_chain)
            if it is not None:
                log.info("teacher: resuming the chain from the store's checkpoint at iteration %d", it)
        with ChainMirror(store, CHAIN_DIR, local_chain):
            teacher, info = ensure_teacher(p, artifact_dir, progress=progress, restart=restart)
        if lease is not None and lease.lost.is_set() and _published(store, stamp):
            log.warning("teacher: another worker published the teacher after our lease expired; using theirs")
            _fetch_teacher(store, artifact_dir)
            return ensure_teacher(p, artifact_dir, progress=False)
        info["teacher_sha256"] = put_file(store, TEACHER_FILE, artifact_dir / TEACHER_FILE)
        put_text(store, KEY_FILE, stamp + "\n")
        info["teacher_store"] = store.where(TEACHER_FILE)
        return teacher, info
