"""Crash-safe chain checkpoints: generation files in a folder, each with its SHA-256 beside it.

A checkpoint folder holds ``chain-<iteration>.pt`` and ``chain-<iteration>.pt.sha256``. A new
generation is written to a temp file, fsynced, its checksum written (temp + rename), then the data
file renamed into place; only after that are older generations removed. A process killed at any
point therefore leaves the previous complete generation intact, and :func:`latest_checkpoint` reads
the newest generation whose file and checksum agree (half-written ones are skipped and cleaned up).
Payloads are plain data, loadable with ``torch.load(weights_only=True)``.

``progress.json`` beside them is a small, frequently replaced note of where a running chain stands
(iteration, total, rate, pid), read by ``gped-search status``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gped_search.errors import ChainCheckpointError  # noqa: F401  (raised here; re-exported)
from gped_search.files import atomic_write_bytes, pid_alive, weights_only_load

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch


__all__ = [
    "ChainCheckpointError",
    "progress_record",
    "save_checkpoint_generation",
    "latest_checkpoint",
    "list_generations",
    "write_progress",
    "read_progress",
    "clear_checkpoints",
    "chain_status",
    "PROGRESS_FILE",
]

FORMAT = "gped-search-chain"
VERSION = 1
PROGRESS_FILE = "progress.json"
_NAME = re.compile(r"^chain-(\d+)\.pt$")


CHAIN_DIR = "teacher.chain"
"""Folder (in a study's report folder) of the teacher chain's checkpoints and progress note."""
DISTILL_CHAIN_DIR = "distill.chain"
"""Folder (in a ``distill`` run's output folder) of its chain (teacher and online students)."""


def _fsync_write(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)


def list_generations(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """(iteration, path) of every checkpoint data file in ``folder``, oldest first (unverified)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = [(int(m.group(1)), folder / n) for n in os.listdir(folder) if (m := _NAME.match(n))]
    return sorted(out)


def save_checkpoint_generation(folder: str | os.PathLike, iteration: int, state: dict, key: str, keep: int = 1) -> Path:
    """Write ``state`` as the generation for ``iteration``; keep the newest ``keep`` generations."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(
        {
            "format": FORMAT,
            "version": VERSION,
            "key": key,
            "iteration": int(iteration),
            "state": state,
        },
        buf,
    )
    data = buf.getvalue()
    path = folder / f"chain-{int(iteration)}.pt"
    # The checksum goes first: a data file is only ever visible next to its own checksum.
    _fsync_write(path.with_name(path.name + ".sha256"), (hashlib.sha256(data).hexdigest() + "\n").encode())
    _fsync_write(path, data)
    for it, old in list_generations(folder)[:-keep]:
        if it != iteration:
            old.unlink(missing_ok=True)
            old.with_name(old.name + ".sha256").unlink(missing_ok=True)
    return path


def latest_checkpoint(
    folder: str | os.PathLike, key: str | None = None, device: str | torch.device = "cpu"
) -> tuple[int, dict] | None:
    """The newest complete generation as (iteration, state), or None; checks checksum and key."""
    for _, path in reversed(list_generations(folder)):
        side = path.with_name(path.name + ".sha256")
        if not side.is_file():
            log.warning("%s: no checksum beside it (a writer was killed mid-write); using an older generation", path)
            continue  # killed between the two renames of an older writer: not a complete generation
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != side.read_text(errors="replace").strip():
            log.warning("%s: checksum mismatch (torn or corrupted); using an older generation", path)
            continue  # torn or corrupted: fall back to the previous generation
        try:
            d = weights_only_load(path, device)
        except (
            OSError,
            RuntimeError,
            EOFError,
            ValueError,
            pickle.UnpicklingError,
        ) as e:  # unreadable: fall back, and say so
            log.warning("%s: unreadable (%s: %s); using an older generation", path, type(e).__name__, e)
            continue
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ChainCheckpointError(f"{path}: not a gped-search chain checkpoint")
        if d.get("version") != VERSION:
            raise ChainCheckpointError(
                f"{path}: chain checkpoint version {d.get('version')} (this gped-search reads "
                f"{VERSION}); delete {Path(folder)} or pass --restart"
            )
        if key is not None and d.get("key") != key:
            raise ChainCheckpointError(
                f"{path}: chain made with other settings (key {d.get('key')} != {key}); pass --restart to discard it"
            )
        return int(d["iteration"]), d["state"]
    return None


def clear_checkpoints(folder: str | os.PathLike) -> int:
    """Remove every generation (and the progress note); returns how many generations were removed."""
    gens = list_generations(folder)
    for _, path in gens:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
    (Path(folder) / PROGRESS_FILE).unlink(missing_ok=True)
    return len(gens)


def write_progress(folder: str | os.PathLike, **fields) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fields.setdefault("updated", time.time())
    fields.setdefault("pid", os.getpid())
    _fsync_write(folder / PROGRESS_FILE, json.dumps(fields).encode())


def read_progress(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / PROGRESS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def chain_status(folder: str | os.PathLike, stale_seconds: float = 600.0) -> dict | None:
    """Where a chain stands: ``running`` (its process is alive and noted progress recently),
    ``paused`` (stopped or killed before its total; the next run resumes it) or ``done``.

    Returns None when the folder holds neither a progress note nor a checkpoint. Iterations are the
    newest noted ones (a paused chain resumes from its newest checkpoint, ``checkpoint_iteration``).
    """
    note = read_progress(folder)
    gens = list_generations(folder)
    if note is None and not gens:
        return None
    note = note or {}
    ckpt = gens[-1][0] if gens else None
    done_it = note.get("iteration", ckpt or 0)
    total = note.get("total")
    state = note.get("state", "paused")
    if state == "running":
        age = time.time() - float(note.get("updated", 0))
        if not pid_alive(int(note.get("pid", -1))) or age > stale_seconds:
            state = "paused"
    if state == "paused":
        done_it = ckpt or 0
    return progress_record(state, done_it, total, ckpt, note)


def progress_record(state: str, done_it: int, total: int | None, ckpt: int | None, note: dict) -> dict:
    """A chain's progress as ``status`` shows it (local folder or object store alike), with the seconds left
    at the rate of its progress ``note``."""
    rate = note.get("rate")
    left = 0.0 if state == "done" else (total - done_it) / rate if rate and total is not None else None
    return {
        "state": state,
        "iteration": done_it,
        "total": total,
        "checkpoint_iteration": ckpt,
        "rate_it_per_s": rate,
        "seconds_left": left,
        "seconds_so_far": note.get("seconds"),
    }
