"""The study's teacher artifact: one file per study, written once, read by every trial and worker.

It holds the posterior means on the test (and OOD) set, the cached means on the transfer set, the
bank of thinned samples, the teacher's architecture, metrics and run statistics, and the config that
produced it. It is plain data (``torch.load(weights_only=True)``) written atomically, with a SHA-256
checksum beside it (``<file>.sha256``) that is verified on load.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from gped_search.errors import ArtifactError  # noqa: F401  (raised here; re-exported)
from gped_search.files import sha256_of, weights_only_load
from gped_search.models import Arch
from gped_search.posterior.result import TeacherResult

__all__ = ["ArtifactError", "save_teacher", "load_teacher"]

FORMAT = "gped-search-teacher"
VERSION = 2  # 2: validation means; transfer means over the thinned iterates; chain key without length


def _cpu(d: dict | None) -> dict | None:
    return None if d is None else {k: v.detach().cpu() for k, v in d.items()}


def save_teacher(path: str | os.PathLike, result: TeacherResult, config: dict) -> str:
    """Write atomically (temp file + rename; the checksum file first). Returns the SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": result.arch.to_dict(),
        "test": _cpu(result.test),
        "val": _cpu(result.val),
        "ood": _cpu(result.ood),
        "transfer": _cpu(result.transfer),
        "bank": _cpu(result.bank),
        "metrics": dict(result.metrics),
        "stats": dict(result.stats),
        "config": config,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    side = path.with_name(path.name + ".sha256")
    side_tmp = side.with_name(side.name + f".tmp{os.getpid()}")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        digest = sha256_of(tmp)
        # Checksum first, artifact last: whoever sees the artifact also sees its checksum (a crash in
        # between leaves only a checksum, and the next writer replaces it).
        side_tmp.write_text(digest + "\n")
        os.replace(side_tmp, side)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        side_tmp.unlink(missing_ok=True)
        raise
    return digest


def load_teacher(
    path: str | os.PathLike, device: torch.device | str = "cpu", expected_sha256: str | None = None
) -> TeacherResult:
    """Load and verify a teacher artifact; any problem is an :class:`ArtifactError` naming the path."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no teacher artifact")
    side = path.with_name(path.name + ".sha256")
    expected = expected_sha256 or (side.read_text(errors="replace").strip() if side.is_file() else None)
    if expected is None:
        raise ArtifactError(f"{path}: no checksum ({side.name} missing): the artifact may be half-written")
    actual = sha256_of(path)
    if actual != expected:
        raise ArtifactError(
            f"{path}: checksum mismatch (expected {expected[:12]}…, file has {actual[:12]}…); "
            f"delete it to re-sample the teacher"
        )
    try:
        d = weights_only_load(path, device)
    except Exception as e:  # corrupt, truncated or unsafe content
        raise ArtifactError(f"{path}: unreadable teacher artifact ({type(e).__name__})") from e
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a gped-search teacher artifact")
    if d.get("version") != VERSION:
        raise ArtifactError(f"{path}: teacher artifact version {d.get('version')} (this gped-search reads {VERSION})")
    try:
        return TeacherResult(
            Arch.from_dict(d["arch"]),
            d["test"],
            d["ood"],
            d["transfer"],
            d["bank"],
            d["metrics"],
            d["stats"],
            val=d.get("val"),
        )
    except Exception as e:  # a missing entry or a malformed architecture
        why = " ".join(str(e).split())[:80]
        raise ArtifactError(f"{path}: incomplete teacher artifact ({type(e).__name__}: {why})") from e
