"""Where a study's files live when its workers share no filesystem: a small object-store interface.

A :class:`Store` maps keys (``teacher.pt``, ``trials/00003/student.pt``) to whole objects. It has the
three methods of Optuna's artifact-store protocol (``open_reader``, ``write``, ``remove``), so a store
(or a :meth:`Store.artifact_store` view of it) is also an ``optuna.artifacts`` store, plus ``list``
and ``check``. Two implementations: :class:`LocalStore` (a folder, ``file:///path``; a shared
filesystem, and what tests use) and :class:`~gped_search.store.s3.S3Store` (``s3://bucket/prefix``,
through ``optuna.artifacts.Boto3ArtifactStore``); :mod:`.urls` opens either from a URL. Writes replace whole objects; a reader sees the old
object or the new one, never part of one. Checksums and the local cache are :mod:`.files`.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO

from gped_search.errors import StoreError
from gped_search.files import atomic_write_stream

__all__ = ["Store", "LocalStore", "PrefixedArtifactStore"]


class Store(ABC):
    """Whole objects under string keys (``/``-separated, relative)."""

    url: str
    """Where the store is, for messages (``s3://bucket/prefix``): never holds a credential."""

    @abstractmethod
    def open_reader(self, key: str) -> BinaryIO:
        """The object's bytes; :class:`KeyError` when there is no such object."""

    @abstractmethod
    def write(self, key: str, body: BinaryIO) -> None:
        """Create or replace the object ``key`` with everything ``body`` holds."""

    @abstractmethod
    def remove(self, key: str) -> None:
        """Delete ``key`` (no error when it is missing)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key that starts with ``prefix``, sorted."""

    @abstractmethod
    def check(self, write: bool = False) -> None:
        """Fail with one line naming what to set unless the store can be read (and, with ``write``, written)."""

    @abstractmethod
    def child(self, name: str) -> Store:
        """The same store with keys under ``name/``."""

    def where(self, key: str) -> str:
        """The object's address, for messages."""
        return f"{self.url.rstrip('/')}/{key}"

    def read_bytes(self, key: str) -> bytes:
        with self.open_reader(key) as f:
            return f.read()

    def write_bytes(self, key: str, data: bytes) -> None:
        import io

        self.write(key, io.BytesIO(data))

    def exists(self, key: str) -> bool:
        return key in self.list(key)

    def artifact_store(self, prefix: str = "artifacts") -> PrefixedArtifactStore:
        """An ``optuna.artifacts`` store over this one, its objects under ``prefix/`` (optuna-dashboard's copies)."""
        return PrefixedArtifactStore(self, prefix)


class PrefixedArtifactStore:
    """Optuna's artifact-store protocol over a :class:`Store`, artifact ids under a prefix."""

    def __init__(self, store: Store, prefix: str):
        self.store, self.prefix = store, prefix.strip("/")

    def open_reader(self, artifact_id: str) -> BinaryIO:
        from optuna.artifacts.exceptions import ArtifactNotFound

        try:
            return self.store.open_reader(f"{self.prefix}/{artifact_id}")
        except KeyError as e:
            raise ArtifactNotFound(f"{self.store.where(f'{self.prefix}/{artifact_id}')}: no such artifact") from e

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.store.write(f"{self.prefix}/{artifact_id}", content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(f"{self.prefix}/{artifact_id}")


class LocalStore(Store):
    """A folder as a store (``file:///path``): one file per key, replaced atomically (temp + rename)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StoreError(f"{self.url}: bad object key {key!r}")
        return self.root / key

    def open_reader(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise KeyError(key) from None

    def write(self, key: str, body: BinaryIO) -> None:
        path = self._path(key)
        atomic_write_stream(path, body)

    def remove(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not k.rsplit("/", 1)[-1].startswith("."))

    def check(self, write: bool = False) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-", delete=True)
            probe.close()
        except OSError as e:
            raise StoreError(
                f"search.artifacts {self.url}: cannot write there ({e.strerror or type(e).__name__}); "
                "give a folder this machine can write"
            ) from None

    def child(self, name: str) -> LocalStore:
        return LocalStore(self.root / name)
