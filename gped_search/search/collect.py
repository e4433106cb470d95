"""Find and read finished studies for a comparison: report folders, storage URLs or study files."""

from __future__ import annotations

import os
from pathlib import Path

import optuna

from gped_search.config import ConfigError, load_study
from gped_search.report.study_run import StudyRun

from .results import trials_frame
from .storage import StudyError, open_storage, open_study

__all__ = ["collect_runs"]

_DB_NAMES = ("study.db", "study.journal")


def _storages(path: str) -> list[tuple[str, str | None]]:
    """(storage URL, study name or None for every study in it) for one command-line argument."""
    if "://" in path:
        return [(path, None)]
    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        return [("yaml:" + str(p), None)]
    if p.is_file():
        return [(_url_for(p), None)]
    if p.is_dir():
        from gped_search.report.run_files import is_runs_folder

        if is_runs_folder(p):  # a comparison's committed trials/ folder
            return [("runs:" + str(p), None)]
        own = [p / n for n in _DB_NAMES if (p / n).is_file()]
        if own:
            return [(_url_for(own[0]), None)]
        found = sorted(f for n in _DB_NAMES for f in p.glob(f"*/{n}"))
        if found:
            return [(_url_for(f), None) for f in found]
        raise ConfigError(
            f"{path}: no study.db or study.journal here or in its sub-folders, and no trials CSV + JSON pairs"
        )
    raise ConfigError(f"{path}: no such study file, report folder or storage")


def _url_for(f: Path) -> str:
    if f.suffix == ".journal":
        return f"journal:{f}"
    return f"sqlite:///{os.path.abspath(f)}"


def collect_runs(paths: list[str]) -> list[StudyRun]:
    """Every study behind ``paths`` (report folders, a folder of them, storage URLs, study files)."""
    runs = []
    for arg in paths:
        for url, name in _storages(arg):
            if url.startswith("runs:"):
                from gped_search.report.run_files import read_runs

                runs += read_runs(url[5:])
                continue
            if url.startswith("yaml:"):
                cfg = load_study(url[5:])
                study = open_study(cfg, create=False)
                runs.append(_run(study))
                continue
            storage = open_storage(url)
            names = [name] if name else [s.study_name for s in optuna.get_all_study_summaries(storage)]
            for n in names:
                try:
                    study = optuna.load_study(study_name=n, storage=storage)
                except KeyError:
                    raise StudyError(f"{arg}: no study named {n!r}") from None
                runs.append(_run(study))
    if not runs:
        raise ConfigError("no studies found in " + ", ".join(paths))
    return runs


def _run(study: optuna.Study) -> StudyRun:
    config = study.user_attrs.get("config")
    if not isinstance(config, dict):
        raise StudyError(f"study {study.study_name!r} records no settings (not made by gped-search?)")
    sn = study.user_attrs.get("supernet")
    overhead = float(sn.get("seconds", 0.0)) + float(sn.get("score_seconds", 0.0)) if isinstance(sn, dict) else 0.0
    return StudyRun(
        study.study_name,
        config,
        trials_frame(study, calibrated=False),
        teacher=dict(study.user_attrs.get("teacher", {})),
        overhead_seconds=overhead,
    )
