"""Pure Pareto / hypervolume helpers over a trials table.

Everything here works on plain ``numpy`` arrays or a ``pandas`` DataFrame with one
row per trial; nothing touches Optuna or the file system.

Expected trial-table columns (the names used by ``optuna.Study.trials_dataframe``
after the lead's renaming):

* ``number`` -- trial number (int); used for ordering in :func:`hypervolume_history`.
* ``state`` -- ``"COMPLETE"`` / ``"FAIL"`` / ``"PRUNED"`` / ``"RUNNING"`` / ...
  (``TrialState`` enums and ``"TrialState.COMPLETE"`` strings are accepted too).
  If the column is absent every row is treated as complete.
* ``feasible`` -- optional bool; rows where it is ``False`` are excluded.  Missing
  values (NaN / None) count as feasible.
* one column per objective, named as in the ``objectives`` mapping
  (``{"kl": "minimize", "bytes_fp32": "minimize", "student_acc": "maximize"}``).

Directions may be written ``"minimize"``/``"min"`` or ``"maximize"``/``"max"``
(case-insensitive) or be ``optuna.study.StudyDirection`` members.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "direction_signs",
    "eligible_mask",
    "hypervolume",
    "hypervolume_history",
    "knee_accuracy_gap",
    "knee_index",
    "knee_point",
    "pareto_front",
    "pareto_mask",
    "reference_point",
]

Objectives = Mapping[str, Any]

_MIN = {"minimize", "min", "studydirection.minimize"}
_MAX = {"maximize", "max", "studydirection.maximize"}


def direction_signs(directions: Sequence[Any]) -> np.ndarray:
    """``+1`` for each minimised and ``-1`` for each maximised objective.

    Multiplying values by these signs turns every objective into "smaller is better".
    """
    signs = []
    for d in directions:
        name = str(getattr(d, "name", d)).strip().lower()
        if name in _MIN:
            signs.append(1.0)
        elif name in _MAX:
            signs.append(-1.0)
        else:
            raise ValueError(f"unknown direction {d!r}; use 'minimize' or 'maximize'")
    return np.asarray(signs, dtype=float)


def _as_2d(values: np.ndarray | pd.DataFrame, k: int) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr.reshape(-1, k) if k else arr.reshape(0, 0)
    if arr.ndim != 2 or arr.shape[1] != k:
        raise ValueError(f"values must have shape (n, {k}), got {arr.shape}")
    return arr


SPREAD = {"latency_ms": ("latency_p10_ms", "latency_p90_ms")}
"""Objectives measured with noise: objective -> (low, high) columns of its spread."""


def pareto_mask(
    values: np.ndarray | pd.DataFrame,
    directions: Sequence[Any],
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean mask of the non-dominated rows of an ``(n, k)`` array.

    Row ``j`` dominates row ``i`` when it is no worse in every objective and strictly
    better in at least one (after flipping maximised objectives).  Identical rows do
    not dominate each other, so duplicates on the front are all kept.  Rows with any
    NaN are never on the front and never dominate anything.  ``±inf`` compare as
    ordinary numbers.

    With ``low``/``high`` (same shape; NaN = use the value), each value is an interval
    (e.g. a latency's p10..p90): ``j`` is strictly better than ``i`` on an objective only
    when their intervals do not overlap, so differences inside the spread are ties.
    """
    signs = direction_signs(directions)
    arr = _as_2d(values, len(signs))
    n = arr.shape[0]
    mask = np.zeros(n, dtype=bool)
    valid = ~np.isnan(arr).any(axis=1)
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return mask
    v = arr[idx] * signs
    lo_raw = v if low is None else np.where(np.isnan(low[idx]), arr[idx], low[idx]) * signs
    hi_raw = v if high is None else np.where(np.isnan(high[idx]), arr[idx], high[idx]) * signs
    lo, hi = np.minimum(lo_raw, hi_raw), np.maximum(lo_raw, hi_raw)
    on_front = np.ones(idx.size, dtype=bool)
    block = max(1, 2_000_000 // max(1, idx.size * v.shape[1]))  # bound memory
    for start in range(0, idx.size, block):
        c_lo, c_hi = lo[start : start + block], hi[start : start + block]  # (b, k)
        # other no worse than cand: cand not strictly better (cand.hi < other.lo is false)
        le = ~(c_hi[:, None, :] < lo[None, :, :]).any(axis=2)  # (b, n)
        lt = (hi[None, :, :] < c_lo[:, None, :]).any(axis=2)  # other strictly better somewhere
        on_front[start : start + block] = ~(le & lt).any(axis=1)
    mask[idx] = on_front
    return mask


def _state_is_complete(state: pd.Series) -> pd.Series:
    names = state.map(lambda s: str(getattr(s, "name", s)).upper().removeprefix("TRIALSTATE."))
    return names.eq("COMPLETE")


def eligible_mask(
    df: pd.DataFrame, feasible_col: str | None = "feasible", state_col: str | None = "state"
) -> pd.Series:
    """Rows that are COMPLETE (if ``state_col`` exists) and not infeasible.

    Only an explicit ``False`` in ``feasible_col`` marks a row infeasible.
    """
    import pandas as pd

    keep = pd.Series(True, index=df.index)
    if state_col is not None and state_col in df.columns:
        keep &= _state_is_complete(df[state_col])
    if feasible_col is not None and feasible_col in df.columns:
        feas = df[feasible_col]
        infeasible = feas.map(lambda v: v is not None and not pd.isna(v) and not bool(v))
        keep &= ~infeasible.astype(bool)
    return keep.astype(bool)


def _sort_best_first(df: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    import pandas as pd

    names = list(objectives)
    signs = direction_signs(list(objectives.values()))
    key = pd.DataFrame({f"_k{i}": df[c].astype(float) * s for i, (c, s) in enumerate(zip(names, signs))})
    order = np.lexsort([key[c].to_numpy() for c in reversed(key.columns)])
    return df.iloc[order]


def pareto_front(
    df: pd.DataFrame,
    objectives: Objectives,
    feasible_col: str | None = "feasible",
    state_col: str | None = "state",
    spread: bool = True,
) -> pd.DataFrame:
    """Non-dominated COMPLETE & feasible rows of ``df`` w.r.t. ``objectives``.

    ``objectives`` maps column name -> direction.  The result keeps the original
    index and columns and is sorted best-first by the first objective (ties broken
    by the following objectives).  Rows with a NaN objective are dropped.  With
    ``spread`` (default), a measured objective listed in :data:`SPREAD` whose
    p10/p90 columns are present is compared as an interval: differences inside the
    measurement spread are ties (latency on a shared CPU is noisy).
    """
    if not objectives:
        raise ValueError("objectives must name at least one column")
    missing = [c for c in objectives if c not in df.columns]
    if missing:
        raise KeyError(f"objective columns not in frame: {missing}")
    pool = df[eligible_mask(df, feasible_col, state_col)]
    if pool.empty:
        return df.iloc[:0].copy()
    names = list(objectives)
    vals = pool[names].to_numpy(dtype=float)
    low = high = None
    if spread and any(k in names and all(c in pool.columns for c in cols) for k, cols in SPREAD.items()):
        low, high = np.full(vals.shape, np.nan), np.full(vals.shape, np.nan)
        for k, (lo_col, hi_col) in SPREAD.items():
            if k in names and lo_col in pool.columns and hi_col in pool.columns:
                j = names.index(k)
                low[:, j] = pool[lo_col].to_numpy(dtype=float)
                high[:, j] = pool[hi_col].to_numpy(dtype=float)
    front = pool[pareto_mask(vals, list(objectives.values()), low, high)]
    return _sort_best_first(front, objectives).copy()


# --------------------------------------------------------------------------- hypervolume
def _hv2d(p: np.ndarray, r: np.ndarray) -> float:
    """Area dominated by ``p`` (minimisation, all points strictly inside ``r``)."""
    order = np.lexsort((p[:, 1], p[:, 0]))
    x, y = p[order, 0], p[order, 1]
    prev_min = np.minimum.accumulate(np.concatenate(([r[1]], y[:-1])))
    return float(np.sum((r[0] - x) * np.clip(prev_min - y, 0.0, None)))


def _hv_slices(p: np.ndarray, r: np.ndarray) -> float:
    """Exact hypervolume by slicing along the last axis (HSO), minimisation."""
    if p.shape[0] == 0:
        return 0.0
    d = p.shape[1]
    if d == 1:
        return float(r[0] - p[:, 0].min())
    if d == 2:
        return _hv2d(p, r)
    p = p[np.argsort(p[:, -1], kind="stable")]
    z = np.concatenate((p[:, -1], [r[-1]]))
    total = 0.0
    for i in range(p.shape[0]):
        thick = z[i + 1] - z[i]
        if thick > 0:
            sub = p[: i + 1, :-1]
            if d > 3 and i > 0:  # the 2-D sweep copes with dominated points itself
                sub = sub[pareto_mask(sub, ["min"] * (d - 1))]
            total += _hv_slices(sub, r[:-1]) * thick
    return total


def hypervolume(points: np.ndarray, ref: np.ndarray | Sequence[float], directions: Sequence[Any]) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``ref``.

    ``points`` is ``(n, k)`` in the objectives' natural units; ``directions`` gives
    each column's direction.  Only points strictly better than ``ref`` in every
    coordinate contribute; NaN rows are ignored.  ``k = 2`` is an exact sort + sweep
    (``O(n log n)``); ``k >= 3`` slices along the last objective and recurses down
    to the 2-D sweep (exact, ``O(n^(k-1) log n)`` -- fine for the few hundred
    non-dominated points of a study, slow for large fronts with ``k >= 4``).
    """
    signs = direction_signs(directions)
    k = len(signs)
    if k == 0:
        raise ValueError("need at least one objective")
    r = np.asarray(ref, dtype=float).reshape(-1)
    if r.shape != (k,) or not np.isfinite(r).all():
        raise ValueError(f"ref must be {k} finite numbers, got {ref!r}")
    p = _as_2d(points, k)
    p = p[~np.isnan(p).any(axis=1)] * signs
    r = r * signs
    p = p[(p < r).all(axis=1)]
    if p.shape[0] == 0:
        return 0.0
    p = np.unique(p[pareto_mask(p, ["min"] * k)], axis=0)
    return _hv_slices(p, r)


def _objective_matrix(df: pd.DataFrame, objectives: Objectives) -> np.ndarray:
    return df[list(objectives)].to_numpy(dtype=float)


def reference_point(
    df: pd.DataFrame,
    objectives: Objectives,
    margin: float = 0.1,
    feasible_col: str | None = "feasible",
    state_col: str | None = "state",
) -> np.ndarray:
    """Default hypervolume reference point, in the objectives' natural units.

    Over the COMPLETE & feasible rows with finite values, per objective:
    ``ref = worst + margin * (max - min)`` pushed in the *worse* direction (larger
    for minimised, smaller for maximised objectives).  If an objective has zero
    range the offset is ``margin * |worst|`` (or ``margin`` when ``worst == 0``) so
    the worst point still contributes.  To compare studies, compute one reference
    point from their concatenated trials and pass it to every history.
    """
    signs = direction_signs(list(objectives.values()))
    vals = _objective_matrix(df[eligible_mask(df, feasible_col, state_col)], objectives)
    vals = vals[np.isfinite(vals).all(axis=1)] * signs
    if vals.shape[0] == 0:
        raise ValueError("no complete, feasible trial with finite objective values")
    worst, best = vals.max(axis=0), vals.min(axis=0)
    span = worst - best
    fallback = np.where(worst != 0, np.abs(worst), 1.0)
    offset = margin * np.where(span > 0, span, fallback)
    return (worst + offset) * signs


def hypervolume_history(
    df: pd.DataFrame,
    objectives: Objectives,
    ref: np.ndarray | Sequence[float] | Mapping[str, float] | None = None,
    feasible_col: str | None = "feasible",
    state_col: str | None = "state",
) -> pd.DataFrame:
    """Hypervolume after each trial, in ``number`` order (index order if absent).

    Returns one row per trial of ``df`` (every state, so the x axis is the budget
    spent) with columns ``trial`` and ``hypervolume``; the value counts only the
    COMPLETE & feasible trials up to and including that one, so it never
    decreases.  ``ref`` may be an array in objective order or a mapping by
    objective name; ``None`` uses :func:`reference_point` of ``df``.
    """
    import pandas as pd

    if df.empty:
        return pd.DataFrame({"trial": pd.Series(dtype="int64"), "hypervolume": pd.Series(dtype=float)})
    if ref is None and not eligible_mask(df, feasible_col, state_col).any():
        ref = np.zeros(len(objectives))  # nothing completed: the volume is 0 anyway
    if ref is None:
        ref = reference_point(df, objectives, feasible_col=feasible_col, state_col=state_col)
    elif isinstance(ref, Mapping):
        ref = [ref[c] for c in objectives]
    directions = list(objectives.values())
    signs = direction_signs(directions)
    r = np.asarray(ref, dtype=float) * signs
    ordered = df.sort_values("number", kind="stable") if "number" in df.columns else df
    trials = ordered["number"].to_numpy() if "number" in df.columns else np.arange(len(df))
    ok = eligible_mask(ordered, feasible_col, state_col).to_numpy()
    vals = _objective_matrix(ordered, objectives) * signs
    mins = ["min"] * len(signs)
    front = np.empty((0, len(signs)))
    hv, out = 0.0, []
    for row, good in zip(vals, ok):
        if good and not np.isnan(row).any() and (row < r).all():
            dominated = front.size and ((front <= row).all(axis=1)).any()
            if not dominated:
                front = np.vstack([front, row])
                front = front[pareto_mask(front, mins)]
                hv = hypervolume(front, r, mins)
        out.append(hv)
    return pd.DataFrame({"trial": trials, "hypervolume": np.asarray(out, dtype=float)})


def knee_point(front_df: pd.DataFrame, objectives: Objectives) -> Hashable:
    """Index label of the front row closest to the ideal point.

    Each objective is min-max normalised over ``front_df`` (maximised objectives
    flipped, constant objectives set to 0) so the ideal point is the origin; the
    row with the smallest Euclidean norm wins (first one on ties).  Rows with a NaN
    objective are ignored.
    """
    i = knee_index(_objective_matrix(front_df, objectives), list(objectives.values()))
    if i is None:
        raise ValueError("front_df has no row with all objectives present")
    return front_df.index[i]


def knee_index(values: np.ndarray, directions: Sequence[Any]) -> int | None:
    """:func:`knee_point` on a plain ``(n, k)`` array of front rows: the row's position (None: no complete row)."""
    vals = np.asarray(values, dtype=float) * direction_signs(directions)
    ok = ~np.isnan(vals).any(axis=1)
    if not ok.any():
        return None
    v = vals[ok]
    lo, hi = v.min(axis=0), v.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    dist = np.linalg.norm((v - lo) / span, axis=1)
    return int(np.flatnonzero(ok)[int(np.argmin(dist))])


KNEE_GAP = 0.05
"""A knee whose validation accuracy is more than this (5 points) below another front member's is warned about."""


def knee_accuracy_gap(front, knee_label, metric: str = "student_acc", gap: float = KNEE_GAP) -> dict | None:
    """When the knee's validation ``metric`` is more than ``gap`` below another front member's: that member's
    trial number, both figures and a one-line warning; else None."""
    if metric not in front.columns or len(front) < 2:
        return None
    acc = front[metric].astype(float)
    best = acc.idxmax()
    knee = float(acc.loc[knee_label])
    if not acc.notna().all() or float(acc.loc[best]) - knee <= gap:
        return None
    n_knee, n_best = int(front.loc[knee_label, "number"]), int(front.loc[best, "number"])
    text = (
        f"the knee (trial {n_knee}) has validation accuracy {100 * knee:.1f} %, "
        f"{100 * (float(acc.loc[best]) - knee):.1f} points below trial {n_best} ({100 * float(acc.loc[best]):.1f} %) "
        f"on the same front: export that one with --trial {n_best}, or steer with --require acc>=X / --best-under SIZE"
    )
    return {"knee": n_knee, "trial": n_best, "knee_acc": knee, "acc": float(acc.loc[best]), "warning": text}
