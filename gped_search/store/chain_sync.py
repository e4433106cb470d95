"""The teacher chain's checkpoints in the store, so a chain killed on one machine resumes on another.

The chain itself checkpoints into a local folder (:mod:`gped_search.posterior.chain_checkpoint`: generation
files with their checksums). :class:`ChainMirror` watches that folder from a thread while the chain
runs and uploads each new complete generation (data, then checksum) and the progress note, then
removes the store's older generations; :func:`pull_chain` brings the store's newest generation that
passes its checksum into the local folder before a chain starts, where the chain's own resume logic
finds it. Nothing in the sampling loop knows about the store.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from pathlib import Path

from gped_search.errors import StoreError
from gped_search.files import sha256_of
from gped_search.posterior.chain_checkpoint import PROGRESS_FILE, list_generations

from .base import Store
from .files import SIDECAR, get_file, put_file, stored_sha256

log = logging.getLogger(__name__)

__all__ = ["ChainMirror", "pull_chain", "store_generations", "clear_store_chain"]

_GEN = re.compile(r"^chain-(\d+)\.pt$")


def store_generations(store: Store, folder: str) -> list[int]:
    """Iterations of the store's complete generations under ``folder/`` (their checksum is there), oldest first."""
    keys = set(store.list(folder + "/"))
    its = []
    for k in keys:
        m = _GEN.match(k.rsplit("/", 1)[-1])
        if m and k + SIDECAR in keys:
            its.append(int(m.group(1)))
    return sorted(its)


def pull_chain(store: Store, folder: str, local: Path) -> int | None:
    """Download the store's newest generation that passes its checksum into ``local``; its iteration or None.

    A torn or tampered generation is skipped with a warning (an older one is tried), as the local
    reader does with a torn local generation."""
    for it in reversed(store_generations(store, folder)):
        name = f"chain-{it}.pt"
        try:
            if get_file(store, f"{folder}/{name}", local / name) is not None:
                return it
        except StoreError as e:
            log.warning("%s; using an older generation", e)
    return None


def clear_store_chain(store: Store, folder: str) -> None:
    for k in store.list(folder + "/"):
        store.remove(k)


class ChainMirror:
    """Uploads a local chain folder's new generations to ``store`` under ``folder/`` (see the module docstring)."""

    def __init__(self, store: Store, folder: str, local: Path, every: float = 1.0):
        self.store, self.folder, self.local, self.every = store, folder, Path(local), every
        gens = store_generations(store, folder)
        self.uploaded = gens[-1] if gens else -1
        self.progress_mtime = 0.0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def sync(self) -> None:
        """Upload the newest local generation if the store lacks it, and the progress note if it changed."""
        with self._lock:
            gens = list_generations(self.local)
            for it, path in reversed(gens):
                if it <= self.uploaded:
                    break
                side = path.with_name(path.name + SIDECAR)
                try:
                    ok = side.is_file() and sha256_of(path) == side.read_text(errors="replace").strip()
                except FileNotFoundError:  # replaced by a newer generation while we looked
                    continue
                if not ok:
                    continue
                key = f"{self.folder}/{path.name}"
                if stored_sha256(self.store, key) is None:
                    put_file(self.store, key, path)
                self.uploaded = it
                for old in store_generations(self.store, self.folder):
                    if old < it:  # the checksum first: the older generation stops counting before its data goes
                        self.store.remove(f"{self.folder}/chain-{old}.pt{SIDECAR}")
                        self.store.remove(f"{self.folder}/chain-{old}.pt")
                break
            note = self.local / PROGRESS_FILE
            with contextlib.suppress(FileNotFoundError):
                m = note.stat().st_mtime
                if m != self.progress_mtime:
                    self.store.write_bytes(f"{self.folder}/{PROGRESS_FILE}", note.read_bytes())
                    self.progress_mtime = m

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.sync()
            except Exception as e:  # kept, and raised by stop(): the chain goes on meanwhile
                self.error = e
                log.warning("could not copy the chain checkpoint to %s: %s", self.store.url, e)

    def __enter__(self) -> ChainMirror:
        self._thread = threading.Thread(target=self._loop, name="chain-mirror", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if exc[0] is None:
            self.sync()  # the final state (kept for an extension) reaches the store before the artifact
