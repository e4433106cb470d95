"""Every error gped-search reports to a user as one line (``gped-search: error: ...``, exit 2).

They live here, apart from the modules that raise them, so that the command line can catch them
without importing torch. Each is also importable from the module that raises it.
"""

from __future__ import annotations

__all__ = [
    "one_line",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "ChainCheckpointError",
    "ArtifactError",
    "DivergenceError",
    "StudyError",
    "ExportError",
    "StoreError",
    "TrialFailed",
    "USER_ERRORS",
]


class ConfigError(ValueError):
    """A study file or override is invalid; the message is one line meant for the user."""


class DataError(RuntimeError):
    """Data could not be found or read; the message says where it looked and how to fix it."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, unsafe or not one of ours."""


class ChainCheckpointError(ValueError):
    """A chain checkpoint is foreign, of another format or made with other settings."""


class ArtifactError(ValueError):
    """A teacher artifact is missing, corrupt, foreign or fails its checksum."""


class DivergenceError(FloatingPointError):
    """The sampler or a student produced NaN/inf."""


class StudyError(RuntimeError):
    """A study cannot be opened or run (missing, mismatched settings, storage problems)."""


class ExportError(ValueError):
    """An export could not be written or did not reload to the same outputs."""


class StoreError(RuntimeError):
    """The study's object store is unreachable, misconfigured, or holds a missing or tampered object."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    CheckpointError,
    ChainCheckpointError,
    ArtifactError,
    DivergenceError,
    StudyError,
    ExportError,
    StoreError,
    OSError,
)
"""What the command line prints as one line and exits 2 for (OSError: files and folders)."""


class TrialFailed(RuntimeError):
    """A search trial failed for a recorded reason; the study goes on."""


def one_line(e: BaseException) -> str:
    """An exception as one short line: its type and the first non-empty line of its message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {(lines[0] if lines else '')[:200]}"
