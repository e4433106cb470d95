"""The comparison's tables: the grid's scaling by student size, the size each metric needs, and the
readable digests and markdown of :mod:`.compare` (pure: frames in, frames or text out)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .compare_plots import method_name, method_rank

__all__ = [
    "caps_digest",
    "front_digest",
    "SIZE_CAPS",
    "size_caps",
    "best_under_caps",
    "grid_scaling",
    "size_needed",
    "md_table",
]


def grid_scaling(runs: Sequence) -> pd.DataFrame:
    """The grid studies' students by size (``runs``: :class:`.compare.StudyRun`): mean and spread over seeds of KL
    and expected-entropy error.

    One row per (setting, depth, width or m): params, kl, expected_entropy_mae, expected_entropy_bias
    (each ``_mean``, ``_sd``), seeds, and the teacher's Monte-Carlo floor KL.
    """
    rows = []
    for r in runs:
        if r.method != "grid":
            continue
        t = r.trials[r.trials["state"] == "COMPLETE"].copy()
        depth = t["param_mlp_depth"] if "param_mlp_depth" in t else pd.Series(np.nan, index=t.index)
        size = (
            t["param_mlp_width"]
            if "param_mlp_width" in t
            else (t["param_m1"].astype(str) + "x" + t["param_m2"].astype(str) if "param_m1" in t else t["number"])
        )
        t = t.assign(
            setting=r.setting,
            depth=depth,
            size=size,
            seed=r.seed,
            mask=r.config.get("data", {}).get("mask_size", 0),
            floor=r.teacher.get("teacher_mc_floor_kl", float("nan")),
        )
        rows.append(t)
    if not rows:
        return pd.DataFrame()
    t = pd.concat(rows, ignore_index=True)
    metrics = [m for m in ("kl", "expected_entropy_mae", "expected_entropy_bias", "student_acc") if m in t]
    g = t.groupby(["setting", "mask", "depth", "size"], dropna=False)
    out = g.agg(
        params=("params", "mean"),
        seeds=("seed", "nunique"),
        floor_kl=("floor", "mean"),
        **{f"{m}_mean": (m, "mean") for m in metrics},
        **{f"{m}_sd": (m, "std") for m in metrics},
    )
    return out.reset_index().sort_values(["mask", "depth", "params"]).reset_index(drop=True)


def size_needed(scaling: pd.DataFrame, metric: str, tolerance: float = 0.10) -> pd.DataFrame:
    """Per (setting, depth): the smallest grid student within ``tolerance`` (relative) of the best one's
    ``metric`` (mean over seeds), e.g. how large a student the expected entropy needs against the KL."""
    rows = []
    for (setting, mask, depth), g in scaling.groupby(["setting", "mask", "depth"], dropna=False):
        col = f"{metric}_mean"
        if col not in g:
            continue
        best = g[col].min()
        ok = g[g[col] <= best * (1 + tolerance)].sort_values("params")
        first = ok.iloc[0]
        rows.append(
            {
                "setting": setting,
                "mask": mask,
                "depth": depth,
                "metric": metric,
                "best": best,
                "smallest_size": first["size"],
                "smallest_params": int(first["params"]),
            }
        )
    return pd.DataFrame(rows)


def caps_digest(caps: pd.DataFrame) -> pd.DataFrame:
    if caps.empty:
        return caps
    return pd.DataFrame(
        {
            "size budget [kB]": (caps["cap"] / 1e3).round(0).astype(int),
            "method": caps["method"].map(method_name),
            "trials/seed": caps["trials"],
            "seeds": caps["seeds"],
            "KL val": caps["val_kl"],
            "KL test": caps["test_kl"],
            "KL test sd": caps["test_kl_sd"],
            "test acc [%]": (100 * caps["test_acc"]).round(2),
        }
    )


def front_digest(fronts: pd.DataFrame) -> pd.DataFrame:
    """Each method's lowest-seed fronts (every study of that method and seed), readable: method, study,
    student, KL val/test, kB, test accuracy, entropy MAE."""
    if fronts.empty:
        return fronts
    f = fronts[fronts["seed"] == fronts.groupby("method")["seed"].transform("min")]
    out = pd.DataFrame(
        {
            "method": f["method"].map(method_name),
            "study": f.get("study", ""),
            "student": f.get("arch", ""),
            "λ_g": f.get("lambda_g", np.nan),
            "KL val": f["kl"],
            "KL test": f.get("test_kl", np.nan),
            "size [kB]": (f["bytes_fp32"] / 1e3).round(1),
            "test acc [%]": (100 * f.get("test_student_acc", np.nan)).round(2),
            "test entropy MAE": f.get("test_expected_entropy_mae", np.nan),
        }
    )
    return out.reset_index(drop=True)


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "–"
        return f"{v:.4g}"
    return str(v)


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)\n"
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(_fmt(v) for v in row) + " |\n" for row in df.itertuples(index=False))


SIZE_CAPS = (50e3, 150e3, 500e3, 1.5e6)
"""Student-size budgets (fp32 bytes) of :func:`best_under_caps`."""


def size_caps(runs: Sequence, caps: Sequence[float] = SIZE_CAPS) -> tuple[float, ...]:
    """The size budgets that tell the runs' students apart: the :data:`SIZE_CAPS` inside the range of their
    sizes plus the first one above it; when fewer than two fall inside, the quartiles of the sizes (two
    significant digits), so digits students of a few kB are not compared under budgets above them all."""
    sizes = pd.concat(
        [r.trials.loc[r.trials["state"] == "COMPLETE", "bytes_fp32"] for r in runs if "bytes_fp32" in r.trials]
        or [pd.Series(dtype=float)]
    ).astype(float)
    if sizes.empty:
        return tuple(caps)
    lo, hi = float(sizes.min()), float(sizes.max())
    inside = [c for c in caps if lo <= c < hi]
    if len(inside) >= 2:
        return (*inside, *[c for c in caps if c >= hi][:1])
    q = np.quantile(sizes, [0.25, 0.5, 0.75, 1.0])
    return tuple(dict.fromkeys(_ceil2(float(v)) for v in q))


def _ceil2(v: float) -> float:
    """``v`` rounded up to two significant digits (a budget never below the size it stands for)."""
    step = 10.0 ** (math.floor(math.log10(v)) - 1)
    return math.ceil(v / step - 1e-9) * step


def best_under_caps(runs: Sequence, caps: Sequence[float] = SIZE_CAPS, budgets: Sequence[int] = ()) -> pd.DataFrame:
    """Per method, trial budget and size budget: the student a user would pick (lowest validation KL
    among the complete trials no larger than the size budget) and its test KL and accuracy, mean and
    sd over seeds. ``budgets``: trial counts a longer run is also cut at (its first n trials)."""
    rows = []
    for r in runs:
        ordered = r.trials.sort_values("number")
        for n in sorted({len(ordered), *[b for b in budgets if b < len(ordered)]}):
            rows += _best_rows(r, ordered.head(n), caps)
    if not rows:
        return pd.DataFrame()
    d = pd.DataFrame(rows)
    g = d.groupby(["method", "trials", "cap"])
    out = g.agg(
        seeds=("seed", "nunique"),
        val_kl=("kl", "mean"),
        test_kl=("test_kl", "mean"),
        test_kl_sd=("test_kl", "std"),
        test_acc=("test_acc", "mean"),
    ).reset_index()
    out["_m"] = out["method"].map(method_rank)
    return out.sort_values(["cap", "_m", "trials"]).drop(columns="_m").reset_index(drop=True)


def _best_rows(r, trials: pd.DataFrame, caps: Sequence[float]) -> list[dict]:
    rows = []
    done = trials[trials["state"] == "COMPLETE"]
    for cap in caps:
        fit = done[done["bytes_fp32"].astype(float) <= cap]
        if fit.empty:
            continue
        best = fit.loc[fit["kl"].astype(float).idxmin()]
        rows.append(
            {
                "method": r.method,
                "seed": r.seed,
                "cap": cap,
                "kl": float(best["kl"]),
                "test_kl": float(best.get("test_kl", np.nan)),
                "test_acc": float(best.get("test_student_acc", np.nan)),
                "trials": int(len(trials)),
            }
        )
    return rows
