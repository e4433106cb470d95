"""Hypervolume against compute seconds (issue 25): what a method reaches with a third of the grid's
compute, how much compute it needs to reach the grid's final hypervolume, and its total."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["hv_at_seconds", "compute_table"]


def hv_at_seconds(curve: pd.DataFrame, seconds: float) -> float:
    """A run's hypervolume once it had spent ``seconds`` (its curve: ``seconds`` and ``hypervolume`` per
    trial, in order); 0 before its first trial ends."""
    done = curve[curve["seconds"] <= seconds + 1e-9]
    return float(done["hypervolume"].max()) if len(done) else 0.0


def _ms(v: list[float], fmt: str = ".4f") -> str:
    """Mean (sd) of the finite values, ``fmt`` each; one value alone; "–" for none."""
    a = np.asarray([x for x in v if np.isfinite(x)], dtype=float)
    if not len(a):
        return "–"
    return f"{a.mean():{fmt}} ({a.std(ddof=1):{fmt}})" if len(a) > 1 else f"{a[0]:{fmt}}"


def compute_table(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per method of one setting (``curves``: :func:`gped_search.report.compare.hv_curves`):
    its final hypervolume and compute, its hypervolume at a third of the grid's mean compute, and the
    compute at which each seed first reached the grid's mean final hypervolume (how many seeds did).
    Empty without a grid."""
    grid = curves[curves["method"] == "grid"]
    if grid.empty:
        return pd.DataFrame()
    runs = {k: g.sort_values("trials") for k, g in curves.groupby(["method", "study"], sort=False)}
    finals = {k: g.iloc[-1] for k, g in runs.items()}
    g_hv = float(np.mean([f["hypervolume"] for (m, _), f in finals.items() if m == "grid"]))
    g_sec = float(np.mean([f["seconds"] for (m, _), f in finals.items() if m == "grid"]))
    rows = []
    for method in dict.fromkeys(m for m, _ in runs):
        keys = [k for k in runs if k[0] == method]
        reach = []
        for k in keys:
            hit = runs[k][runs[k]["hypervolume"] >= g_hv - 1e-12]
            reach.append(float(hit["seconds"].iloc[0]) if len(hit) else float("nan"))
        got = [x for x in reach if np.isfinite(x)]
        rows.append(
            {
                "method": method,
                "seeds": len(keys),
                "final hv": _ms([float(finals[k]["hypervolume"]) for k in keys]),
                "compute s": _ms([float(finals[k]["seconds"]) for k in keys], ",.0f"),
                "compute / grid's": f"{np.mean([finals[k]['seconds'] for k in keys]) / g_sec:.2f}",
                "hv at 1/3 of the grid's compute": _ms([hv_at_seconds(runs[k], g_sec / 3) for k in keys]),
                "seeds reaching the grid's final hv": f"{len(got)} of {len(keys)}",
                "compute to reach it / grid's": f"{np.mean(got) / g_sec:.2f}" if got else "–",
            }
        )
    return pd.DataFrame(rows)
