"""File utilities, one home for every module: atomic writes, SHA-256 of files, exclusive file locks,
whether a process is alive, and weights-only torch loads. Imports no torch at module level."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write_bytes", "atomic_write_stream", "sha256_of", "file_lock", "pid_alive", "weights_only_load"]


def atomic_write_stream(path: str | os.PathLike, body: BinaryIO) -> None:
    """Copy the readable ``body`` to ``path`` atomically: a temp file in the same folder, fsynced, then
    renamed. A reader sees the old file or the whole new one, never part of it; a crash leaves at most a
    ``.<name>.*.tmp`` file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write_stream`)."""
    atomic_write_stream(path, io.BytesIO(data))


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (checkpoints, teacher artifacts, exported files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block; the OS frees it if we die."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released by the OS if the holder dies
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` alive on this host (a process we may not signal counts as alive)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def weights_only_load(path: str | os.PathLike, map_location="cpu"):
    """``torch.load(weights_only=True)`` without torch's warnings (e.g. "Detected pickle protocol 4"),
    which would sit on top of the caller's one-line error. Never runs pickled code."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location=map_location, weights_only=True)
