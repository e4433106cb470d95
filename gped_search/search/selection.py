"""Steering which student to export: ``--best-under SIZE`` and ``--require METRIC>=X`` on validation figures
(the warning when the knee is far less accurate than another front member is ``report.tables``'s
``knee_accuracy_gap``). No torch, no Optuna, no pandas import."""

from __future__ import annotations

import re

from gped_search.errors import ConfigError

__all__ = ["parse_size", "parse_requirement", "ALIASES", "apply_filters", "check_trial_number"]

_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024**2}
ALIASES = {"acc": "student_acc", "accuracy": "student_acc", "nll": "student_nll", "ece": "student_ece"}
"""Short names ``--require`` accepts for the validation metrics."""


def parse_size(text: str) -> float:
    """``500kB`` / ``1.2MB`` / ``64KiB`` / ``500000`` -> bytes (kB = 1000 bytes, as the report's sizes)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*", text or "")
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise ConfigError(f"--best-under {text!r}: give a size such as 500kB, 1.5MB or 200000 (bytes)")
    size = float(m.group(1)) * _UNITS[unit]
    if size <= 0:
        raise ConfigError(f"--best-under {text!r}: the size must be > 0")
    return size


def parse_requirement(text: str) -> tuple[str, str, float]:
    """``acc>=0.95`` -> (``student_acc``, ``>=``, 0.95); also ``<=``, ``>``, ``<``. Validation metrics only."""
    m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*", text)
    if not m:
        raise ConfigError(f"--require {text!r}: give METRIC>=NUMBER or METRIC<=NUMBER, e.g. acc>=0.95")
    name = ALIASES.get(m.group(1), m.group(1))
    if name.startswith("test_"):
        raise ConfigError(
            f"--require {text}: test figures never select a student; use {name.removeprefix('test_')} (validation)"
        )
    return name, m.group(2), float(m.group(3))


def apply_filters(df, best_under: float | None = None, require=()):
    """Complete trials of ``df`` (a trials frame) that fit ``best_under`` bytes (fp32) and every requirement."""
    import difflib

    ops = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}
    out = df[df["state"] == "COMPLETE"] if "state" in df.columns else df
    rules = ([("bytes_fp32", "<=", best_under)] if best_under is not None else []) + list(require)
    for name, op, value in rules:
        if name not in out.columns:
            valid = sorted(c for c in df.columns if not c.startswith("test_") and df[c].dtype.kind in "fi")
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"--require {name}: no trial recorded it ({hint}valid: {', '.join(valid)})")
        out = out[ops[op](out[name].astype(float), value)]
    if out.empty:
        what = ", ".join(f"{n} {op} {v:g}" for n, op, v in rules)
        raise ConfigError(f"no complete trial has {what} (validation figures); relax the limit")
    return out


def check_trial_number(study, text: str, index: dict | None = None) -> int:
    """``--trial N``: the number of an existing, complete trial of ``study`` (read without pandas), or of
    the study that ``index`` (:func:`~gped_search.search.status_cache.trial_index`) describes; with
    neither, only that ``text`` is a number."""
    try:
        number = int(text)
    except ValueError:
        raise ConfigError(f"--trial {text!r}: give a number or best:<objective>") from None
    if study is None and index is None:
        return number
    if index is None:
        from .status_cache import trial_index

        index = trial_index(study)
    if not 0 <= number < index["count"]:  # Optuna numbers a study's trials 0, 1, 2, ...
        raise ConfigError(f"--trial {number}: trial {number} does not exist (the study has {index['count']} trials)")
    state, reason = index["not_complete"].get(str(number), ("COMPLETE", None))
    if state != "COMPLETE":
        raise ConfigError(
            f"--trial {number}: trial {number} is {state}"
            + (f" ({reason})" if isinstance(reason, str) else "")
            + "; only complete trials can be exported"
        )
    return number
