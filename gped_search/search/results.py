"""Reading a study: every trial as a frame, its status, and what sharing one teacher saved."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.trial import TrialState

from gped_search.report.tables import SPREAD, knee_index, pareto_front, pareto_mask

from .locations import mask_url

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "is_scalar",
    "CALIBRATION_ATTR",
    "trials_frame",
    "study_status",
    "teacher_seconds_saved",
    "study_path",
    "live_exports",
]

CALIBRATION_ATTR = "latency_calibration"


def is_scalar(v) -> bool:
    return isinstance(v, (bool, int, float, str)) and not (isinstance(v, float) and not math.isfinite(v))


def _trial_rows(study: optuna.Study, calibrated: bool = True) -> tuple[list[str], list[dict]]:
    """Objective names and one plain dict per trial (what :func:`trials_frame` tabulates)."""
    names = study.user_attrs.get("objectives") or [f"objective_{i}" for i in range(len(study.directions))]
    cal = study.user_attrs.get(CALIBRATION_ATTR, {}) if calibrated else {}
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {
            "number": t.number,
            "state": t.state.name,
            "duration_s": t.duration.total_seconds() if t.duration else None,
            "datetime_start": t.datetime_start,
            "datetime_complete": t.datetime_complete,
        }
        row.update({f"param_{k}": v for k, v in t.params.items()})
        row.update({k: v for k, v in t.user_attrs.items() if is_scalar(v) or v is None})
        if t.values is not None:
            row.update(dict(zip(names, t.values)))
        if str(t.number) in cal:
            row["latency_trial_ms"] = row.get("latency_ms")
            row["latency_ms"], row["latency_p10_ms"], row["latency_p90_ms"] = cal[str(t.number)]
            row["latency_calibrated"] = True
        cons = t.constraints
        row["feasible"] = all(c <= 0 for c in cons.values()) if cons else True
        row.setdefault("fail_reason", None)
        rows.append(row)
    return names, rows


def trials_frame(study: optuna.Study, calibrated: bool = True) -> pd.DataFrame:
    """Every trial: number, state, parameters, objectives by name, every scalar metric, failure reason.

    With ``calibrated`` (default), latencies re-measured by :func:`calibrate_front` replace the
    trial-time figures (kept as ``latency_trial_ms``), and ``on_front`` treats latency differences
    inside their p10..p90 spread as ties.
    """
    import pandas as pd

    names, rows = _trial_rows(study, calibrated)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["number", "state", *names, "feasible", "fail_reason", "on_front"])
    for n in names:
        if n not in df.columns:
            df[n] = float("nan")
    front = pareto_front(df, study_objectives(study))
    df["on_front"] = df.index.isin(front.index)
    return df


def _front(rows: list[dict], objectives: dict[str, str]) -> tuple[int, dict | None]:
    """How many COMPLETE, feasible trials are non-dominated (:func:`pareto_front`'s rule: latency
    differences inside the p10..p90 spread are ties) and the knee's row, on plain rows, without pandas."""
    nan = float("nan")
    pool = [r for r in rows if r["state"] == "COMPLETE" and r.get("feasible") is not False]
    if not pool:
        return 0, None
    names = list(objectives)

    values = np.array([[_num(r.get(n, nan)) for n in names] for r in pool])
    low = [[_num(r.get(SPREAD[n][0], nan)) if n in SPREAD else nan for n in names] for r in pool]
    high = [[_num(r.get(SPREAD[n][1], nan)) if n in SPREAD else nan for n in names] for r in pool]
    mask = pareto_mask(values, list(objectives.values()), np.array(low), np.array(high))
    on = np.flatnonzero(mask)
    k = knee_index(values[on], list(objectives.values())) if len(on) else None
    return int(mask.sum()), (pool[int(on[k])] if k is not None else None)


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


def study_status(study: optuna.Study, url: str | None = None) -> dict:
    """Trial counts by state, the front's size, the teacher: read without pandas (``status`` stays fast)."""
    _, rows = _trial_rows(study)
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    teacher = study.user_attrs.get("teacher", {})
    used: dict[str, int] = {}
    for r in rows:
        k, it = r.get("teacher_key"), r.get("teacher_iterations")
        if r["state"] == "COMPLETE" and k is not None and isinstance(it, (int, float)):
            used[f"{k}@{int(it)}"] = used.get(f"{k}@{int(it)}", 0) + 1
    objectives = study_objectives(study)
    front_size, row = _front(rows, objectives)
    knee = (
        None
        if row is None
        else {"trial": int(row["number"]), "arch": row.get("arch"), **{k: row.get(k) for k in objectives}}
    )
    return {
        "study": study.study_name,
        "storage": mask_url(url) if url else None,
        "teachers_used": used,
        "trials": {s.name: states[s.name] for s in TrialState if states.get(s.name)},
        "front_size": front_size,
        "knee": knee,
        "objectives": objectives,
        "teacher": {k: teacher.get(k) for k in ("teacher_acc", "teacher_nll", "seconds", "iterations") if k in teacher},
        "teacher_artifact": study.user_attrs.get("teacher_artifact"),
    }


def teacher_seconds_saved(study: optuna.Study) -> dict:
    """How much re-sampling the teacher per trial would have cost on top of what the study spent.

    ``trial_seconds`` is the wall time during which at least one completed trial was running (the
    union of their intervals), so trials of one lockstep batch or of parallel workers are not counted
    twice; ``trial_seconds_sum`` adds the trials' own durations.
    """
    teacher = study.user_attrs.get("teacher", {})
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    secs = float(teacher.get("seconds", 0.0))
    spans = sorted((t.datetime_start, t.datetime_complete) for t in done if t.datetime_start and t.datetime_complete)
    busy, end = 0.0, None
    for a, b in spans:
        if end is None or a > end:
            busy += (b - a).total_seconds()
            end = b
        elif b > end:
            busy += (b - end).total_seconds()
            end = b
    total = sum(t.duration.total_seconds() for t in done if t.duration)
    return {
        "teacher_seconds": secs,
        "completed_trials": len(done),
        "trial_seconds": busy,
        "trial_seconds_sum": total,
        "saved_seconds": secs * max(0, len(done) - 1),
        "saved_fraction": (secs * max(0, len(done) - 1)) / max(1e-9, secs * len(done) + busy),
    }


def study_path(out_dir: str | Path, stored: str | None) -> Path | None:
    """A file recorded by a study (a trial's checkpoint, the teacher artifact), found from the study's folder.

    New studies record paths relative to their report folder, so a copied or moved folder works; older
    ones recorded absolute paths: the part after the folder's name is tried inside ``out_dir`` first.
    """
    if not isinstance(stored, str) or not stored:
        return None
    out_dir, p = Path(out_dir), Path(stored)
    if not p.is_absolute():
        return out_dir / p
    parts = p.parts
    if out_dir.name in parts:
        local = out_dir.joinpath(*parts[len(parts) - parts[::-1].index(out_dir.name) :])
        if local.exists():
            return local
    return p


def study_objectives(study: optuna.Study) -> dict[str, str]:
    """The study's objectives by name -> ``minimize`` | ``maximize`` (one place reads them)."""
    names = study.user_attrs.get("objectives") or [f"objective_{i}" for i in range(len(study.directions))]
    return dict(zip(names, [d.name.lower() for d in study.directions]))


def live_exports(study: optuna.Study) -> dict[int, str]:
    """Exported trials whose export folder still holds that trial's model card, shown by the folder's name
    (a throw-away export deleted or overwritten by another trial's stars nothing; no absolute paths)."""
    import json

    out = {}
    for k, where in study.user_attrs.get("exported_trials", {}).items():
        try:
            card = json.loads((Path(where) / "model_card.json").read_text())
        except (OSError, ValueError):
            continue
        if card.get("study", {}).get("name") == study.study_name and card["study"].get("trial_number") == int(k):
            out[int(k)] = Path(where).name + "/"
    return out
