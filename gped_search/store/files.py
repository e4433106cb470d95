"""Checksummed files in a store, and each worker's local, checksum-verified cache of them.

Every object ``K`` is stored with ``K.sha256`` (its SHA-256 in hex). The data goes up first and the
checksum last, so an object whose checksum exists is complete: a writer killed in between leaves a
data object no reader takes. :func:`get_file` downloads into the local folder (a temp file, then
renamed) only when the local copy's checksum differs from the store's, and refuses an object whose
bytes do not match its checksum (torn or tampered) in one line. The local copy gets its ``.sha256``
beside it too, so the local readers (teacher artifacts, chain checkpoints) verify it as before.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from pathlib import Path

from gped_search.errors import StoreError
from gped_search.files import atomic_write_bytes, sha256_of

from .base import Store
from .urls import open_store, study_store

__all__ = [
    "SIDECAR",
    "put_file",
    "get_file",
    "stored_sha256",
    "fetch_study_file",
    "publish_study_file",
    "publish_study_folder",
    "fetch_study_folder",
    "fetch_url",
]

SIDECAR = ".sha256"


def stored_sha256(store: Store, key: str) -> str | None:
    """The checksum the store holds for ``key``; None while the object is missing or incomplete."""
    try:
        text = store.read_bytes(key + SIDECAR).decode("ascii", "replace").strip()
    except KeyError:
        return None
    return text or None


def put_file(store: Store, key: str, path: str | os.PathLike) -> str:
    """Upload ``path`` as ``key``, then its checksum (the object counts as stored from then on)."""
    path = Path(path)
    digest = sha256_of(path)
    with open(path, "rb") as f:
        store.write(key, f)
    store.write_bytes(key + SIDECAR, (digest + "\n").encode())
    return digest


def get_file(store: Store, key: str, dest: str | os.PathLike) -> Path | None:
    """``dest`` holding the stored object ``key``, verified; None when the store has no complete ``key``.

    A local copy whose checksum already matches is kept (the cache); otherwise the object is downloaded,
    checked against its stored checksum (a mismatch is a :class:`StoreError`) and renamed into place
    after its ``.sha256``.
    """
    dest = Path(dest)
    expected = stored_sha256(store, key)
    if expected is None:
        return None
    side = dest.with_name(dest.name + SIDECAR)
    if dest.is_file() and sha256_of(dest) == expected:
        if not side.is_file() or side.read_text(errors="replace").strip() != expected:
            atomic_write_bytes(side, (expected + "\n").encode())
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:  # streamed through a temp file beside dest while hashed: large teachers never sit in memory whole
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as f:
            try:
                reader = store.open_reader(key)
            except KeyError:
                raise StoreError(f"{store.where(key)}: its checksum is stored but the object is missing") from None
            with reader:
                for block in iter(lambda: reader.read(1 << 20), b""):
                    h.update(block)
                    f.write(block)
            f.flush()
            os.fsync(f.fileno())
        actual = h.hexdigest()
        if actual != expected:
            raise StoreError(
                f"{store.where(key)}: checksum mismatch (stored {expected[:12]}..., object has {actual[:12]}...): "
                "torn or tampered; refused"
            )
        atomic_write_bytes(side, (expected + "\n").encode())  # the checksum first, the data last (as local writers do)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def put_text(store: Store, key: str, text: str) -> None:
    store.write(key, io.BytesIO(text.encode()))


def get_text(store: Store, key: str) -> str | None:
    try:
        return store.read_bytes(key).decode("utf-8", "replace")
    except KeyError:
        return None


def fetch_study_file(cfg, stored: str | None, local: Path | None) -> Path | None:
    """A file a study recorded (``trials/00003/student.pt``), fetched from the study's store into ``local``.

    ``local`` is where the report folder would hold it (:func:`~gped_search.search.results.study_path`).
    Without ``search.artifacts``, or for a path the store cannot hold (an absolute one of an old study),
    ``local`` is returned as it is.
    """
    store = study_store(cfg)
    if store is None or local is None or not isinstance(stored, str) or Path(stored).is_absolute():
        return local
    got = get_file(store, Path(stored).as_posix(), local)
    if got is None and not local.is_file():
        raise StoreError(f"{store.where(stored)}: not in the store (the study records it; was it deleted?)")
    return got or local


def publish_study_file(cfg, path: Path, out_dir: Path) -> str | None:
    """Upload a file of the report folder to the study's store under its relative path; its checksum, or None."""
    store = study_store(cfg)
    if store is None:
        return None
    return put_file(store, path.resolve().relative_to(out_dir.resolve()).as_posix(), path)


def publish_study_folder(cfg, folder: str | os.PathLike) -> int:
    """Upload the files of a folder inside the report folder (``downstream/``) to the study's store; how many.

    Nothing happens without ``search.artifacts`` or for a folder outside the report folder (``--out``)."""
    store, out_dir, folder = study_store(cfg), Path(cfg.out_dir).resolve(), Path(folder).resolve()
    if store is None or not folder.is_relative_to(out_dir):
        return 0
    files = [f for f in sorted(folder.rglob("*")) if f.is_file() and not f.name.startswith(".")]
    for f in files:
        put_file(store, f.relative_to(out_dir).as_posix(), f)
    return len(files)


def fetch_study_folder(cfg, rel: str) -> int:
    """The store's objects under ``rel/`` (e.g. ``downstream``) into the report folder, verified; how many."""
    store = study_store(cfg)
    if store is None:
        return 0
    keys = [k for k in store.list(rel.rstrip("/") + "/") if not k.endswith(SIDECAR)]
    return sum(get_file(store, k, Path(cfg.out_dir) / k) is not None for k in keys)


def fetch_url(url: str, cache: str | os.PathLike | None = None) -> Path:
    """The stored object ``url`` (``s3://bucket/prefix/<study>/teacher.pt``), verified, in a local cache
    (``$XDG_CACHE_HOME/gped-search/store``, else ``~/.cache/...``): what ``evaluate`` reads store URLs through."""
    parent, _, name = url.rstrip("/").rpartition("/")
    if "://" not in parent or not name:
        raise StoreError(f"{url}: give the object's full address, e.g. s3://bucket/prefix/<study>/teacher.pt")
    store = open_store(parent)
    store.check()
    root = Path(cache) if cache else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gped-search"
    dest = root / "store" / re.sub(r"[^A-Za-z0-9._-]+", "_", parent.split("://", 1)[1]) / name
    got = get_file(store, name, dest)
    if got is None:
        raise StoreError(f"{url}: not in the store (no object with its .sha256 beside it)")
    return got
