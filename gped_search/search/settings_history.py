"""A study's settings on disk: ``study.yaml`` is rewritten by every ``run``; when a re-run changes what the
study searches (a widened ``search.space``), the earlier settings are kept in ``study.history.yaml``, and a
change Optuna cannot follow (another list of choices) is refused in one line."""

from __future__ import annotations

from gped_search.config import StudyConfig, to_dict
from gped_search.config.loading import upgrade_keys

from .storage import StudyError

__all__ = ["HISTORY_FILE", "record_settings"]


HISTORY_FILE = "study.history.yaml"
_UNTRACKED = ("n_trials", "timeout", "batch")  # search settings that say how long, not what


def _tracked(d: dict) -> dict:
    """Settings whose change makes earlier trials come from another study: not where, not how long."""
    d = {k: v for k, v in d.items() if k != "report_dir"}
    d["search"] = {k: v for k, v in (d.get("search") or {}).items() if k not in _UNTRACKED}
    return d


def _changed(old: dict, new: dict) -> list[str]:
    """The settings (``section.key``) of ``old`` that ``new`` holds otherwise (both ``to_dict`` forms)."""
    out = []
    for sec in sorted(set(old) | set(new)):
        a, b = old.get(sec), new.get(sec)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{sec}.{k}" for k in sorted(a) if a[k] != b.get(k)]  # a key new to the schema: its default
        elif a != b:
            out.append(sec)
    return out


def _check_space_change(old: dict, new: dict, name: str) -> None:
    """Optuna keeps a parameter's kind and a categorical parameter's choices for the whole study: widen
    ranges, never change a list of choices (or a range into a list). One line instead of its traceback."""
    for k in sorted(set(old) & set(new)):
        a, b = old[k], new[k]
        if isinstance(a, list) != isinstance(b, list) or (isinstance(a, list) and a != b):
            raise StudyError(
                f"search.space.{k}: {a!r} -> {b!r}: a study cannot change a parameter's list of choices or turn "
                f"a range into a list (Optuna keeps them per study); widen a range, or start a new study "
                f"(--set name={name}_2)"
            )


def record_settings(cfg: StudyConfig) -> None:
    """Write ``study.yaml``; when it held other settings (a widened ``search.space``), keep the earlier ones
    in ``study.history.yaml`` (a list, oldest first, each with the time it was replaced) and say so."""
    import datetime
    import logging

    import yaml

    path = cfg.out_dir / "study.yaml"
    new = to_dict(cfg)
    try:
        old = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        old = None
    if isinstance(old, dict):  # written before a key was renamed: compare it under the new name
        old = upgrade_keys(old, warn=False)
    changed = _changed(_tracked(old), _tracked(new)) if isinstance(old, dict) else []
    if "search.space" in changed:
        _check_space_change((old.get("search") or {}).get("space") or {}, new["search"]["space"], cfg.name)
    if changed:
        hist_path = cfg.out_dir / HISTORY_FILE
        try:
            history = yaml.safe_load(hist_path.read_text()) if hist_path.is_file() else []
        except yaml.YAMLError:
            history = []
        when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        history = [*(history if isinstance(history, list) else []), {"replaced": when, "settings": old}]
        hist_path.write_text(yaml.safe_dump(history, sort_keys=False))
        logging.getLogger(__name__).warning(
            "study %s: settings changed since the earlier run (%s); the earlier ones are kept in %s",
            cfg.name,
            ", ".join(changed),
            hist_path,
        )
    path.write_text(_yaml(cfg))


def _yaml(cfg: StudyConfig) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
