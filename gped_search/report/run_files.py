"""Every compared study's trials as files (``trials/<study>.csv`` with every column, start and end times
included, and ``trials/<study>.json`` with its settings, teacher and overhead seconds), so that a
comparison, its hypervolume at any budget included, can be recomputed from a repository alone:
``gped-search compare <out>/trials`` reads them back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .study_run import StudyRun

__all__ = ["write_runs", "read_runs", "is_runs_folder"]


def write_runs(runs: Sequence[StudyRun], folder: str | Path) -> list[Path]:
    """Write each run's trials and settings into ``folder``; returns the CSV paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in runs:
        r.trials.sort_values("number").to_csv(out / f"{r.name}.csv", index=False)
        meta = {"config": r.config, "teacher": r.teacher, "overhead_seconds": r.overhead_seconds}
        (out / f"{r.name}.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")
        paths.append(out / f"{r.name}.csv")
    return paths


def is_runs_folder(folder: Path) -> bool:
    return folder.is_dir() and any((folder / f"{j.stem}.csv").is_file() for j in folder.glob("*.json"))


def read_runs(folder: str | Path) -> list[StudyRun]:
    """The runs :func:`write_runs` wrote (study name = file stem)."""
    runs = []
    for j in sorted(Path(folder).glob("*.json")):
        csv = j.with_suffix(".csv")
        if not csv.is_file():
            continue
        meta = json.loads(j.read_text())
        trials = pd.read_csv(csv)
        runs.append(
            StudyRun(
                j.stem,
                meta["config"],
                trials,
                teacher=meta.get("teacher", {}),
                overhead_seconds=float(meta.get("overhead_seconds", 0.0)),
            )
        )
    return runs
