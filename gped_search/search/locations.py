"""Where a study's storage is, without importing Optuna: its URL, the URL with the password hidden, and
the local file behind it (SQLite or journal), whose fingerprint tells whether the study changed."""

from __future__ import annotations

import re
from pathlib import Path

from gped_search.config import StudyConfig

__all__ = ["storage_url", "mask_url", "storage_file", "storage_fingerprint"]


def storage_url(cfg: StudyConfig, override: str | None = None, workers: int = 1) -> str:
    """The study's storage: ``--storage``, the study file's, else a file in the report folder."""
    url = override or cfg.search.storage
    if url:
        return url
    out = cfg.out_dir.resolve()
    journal, sqlite = out / "study.journal", out / "study.db"
    if workers > 1 or (journal.exists() and not sqlite.exists()):
        return f"journal:///{journal}"
    return f"sqlite:///{sqlite}"


def mask_url(url: str) -> str:
    """Hide a password in ``scheme://user:password@host`` URLs (logs, reports, status)."""
    return re.sub(r"(://[^:/]*):[^@]*@", r"\1:***@", url)  # user as SQLAlchemy parses it: may be empty


def storage_file(url: str) -> Path | None:
    """The local file a SQLite or journal URL names; None for a database server."""
    if url.startswith("journal://") or url.endswith(".journal"):
        return Path(url.removeprefix("journal://"))
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///").split("?")[0])
    return None


def storage_fingerprint(url: str) -> list[int] | None:
    """Something that changes whenever the study's storage file is written; None when it cannot be known.

    A journal only grows, so its size changes with every write. SQLite rewrites pages in place, so its
    header's *file change counter* (bytes 24–27, incremented by every committed transaction in
    rollback-journal mode; https://www.sqlite.org/fileformat.html) is read beside size and mtime;
    a write-ahead log, where the counter need not move, adds the ``-wal`` file's size and mtime.
    """
    path = storage_file(url)
    if path is None:
        return None
    try:
        st = path.stat()
        fp = [st.st_size, st.st_mtime_ns]
        if url.startswith("sqlite:///"):
            with open(path, "rb") as f:
                header = f.read(28)
            if len(header) < 28 or not header.startswith(b"SQLite format 3\x00"):
                return None
            fp.append(int.from_bytes(header[24:28], "big"))
            wal = path.with_name(path.name + "-wal")
            if wal.exists():
                w = wal.stat()
                fp += [w.st_size, w.st_mtime_ns]
    except OSError:
        return None
    return fp
