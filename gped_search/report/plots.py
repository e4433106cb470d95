"""Matplotlib figures for the search report.

Every function builds a fresh :class:`matplotlib.figure.Figure` on an Agg canvas
(no ``pyplot`` state, no global backend switch) and RETURNS it; callers save it
with ``fig.savefig(path)``.  Nothing is shown or written here.

Trial-table columns used by :func:`plot_pareto_pair`: the two objective columns,
``state`` (only ``COMPLETE`` rows are drawn; optional), ``feasible`` (``False`` rows
are drawn as grey crosses and excluded from the front; optional), ``number``
(trial numbers for the labels; the index is used if absent) and the ``color_by``
column (``family`` categories, ``lambda_g`` floats >= 0; optional).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from .axes import (  # noqa: F401  (re-exported: figures and callers import them from here)
    UNITS,
    AxisSpec,
    axis_spec,
    complete_rows,
    finish_axes,
    finite,
    guess_direction,
    new_axes,
    step_style,
    wants_log,
)
from .labels import annotate_front
from .tables import eligible_mask, pareto_front

__all__ = [
    "UNITS",
    "AxisSpec",
    "axis_spec",
    "plot_pareto_pair",
]

_FAMILY_MARKERS = ("o", "s", "^", "D", "v", "P")
_FRONT_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:olive")
_POINT_STYLE: dict[str, Any] = {"s": 30, "alpha": 0.8, "linewidths": 0.4, "edgecolors": "white", "zorder": 2}


def _draw_points(
    ax: Axes,
    fig: Figure,
    pts: pd.DataFrame,
    x: str,
    y: str,
    sx: float,
    sy: float,
    color_by: str | None,
) -> None:
    """Every trial as a point: marker shape by family, colour by ``color_by`` (categories or a scale)."""
    fam = pts["family"].astype(str) if "family" in pts.columns else pd.Series("", index=pts.index)
    marker = {f: _FAMILY_MARKERS[i % len(_FAMILY_MARKERS)] for i, f in enumerate(sorted(fam.unique()))}
    xs, ys = pts[x].to_numpy(float) * sx, pts[y].to_numpy(float) * sy
    numeric = (
        color_by is not None
        and color_by in pts.columns
        and color_by != "family"
        and pd.api.types.is_numeric_dtype(pts[color_by])
    )
    if numeric:
        _draw_scaled(ax, fig, pts[color_by].to_numpy(float), color_by, fam, marker, xs, ys)
        return
    col = fam if color_by in (None, "family") else pts[color_by].astype(str) if color_by in pts.columns else fam
    for i, cat in enumerate(sorted(col.unique())):
        m = (col == cat).to_numpy()
        label = f"{cat} (n={m.sum()})" if cat else f"trials (n={m.sum()})"
        color = f"C{i}" if color_by else "tab:blue"
        ax.scatter(xs[m], ys[m], color=color, label=label, marker=marker.get(cat, "o"), **_POINT_STYLE)


def _color_norm(c: np.ndarray, name: str) -> tuple[Normalize, bool]:
    """A log scale for λ-like or wide positive values (zeros drawn apart), else linear; (norm, logish)."""
    pos = c[np.isfinite(c) & (c > 0)]
    logish = "lambda" in name.lower() or bool(
        pos.size and (c[np.isfinite(c)] >= 0).all() and pos.max() / pos.min() > 10
    )
    if logish and pos.size:
        lo, hi = float(pos.min()), float(pos.max())
        return LogNorm(lo, hi if hi > lo else lo * 10), True
    fin = c[np.isfinite(c)]
    return (Normalize(float(fin.min()), float(fin.max())) if fin.size else Normalize(0, 1)), logish


def _draw_scaled(
    ax: Axes, fig: Figure, c: np.ndarray, color_by: str, fam: pd.Series, marker: dict, xs: np.ndarray, ys: np.ndarray
) -> None:
    """Points coloured on a colour scale of ``c`` (zeros of a log scale and missing values grey)."""
    norm, logish = _color_norm(c, color_by)
    pretty = "λ_g" if "lambda_g" in color_by else color_by
    mappable, n_zero = None, 0
    for f in sorted(fam.unique()):
        in_f = (fam == f).to_numpy()
        zero = in_f & ((c <= 0) | ~np.isfinite(c)) if logish else in_f & ~np.isfinite(c)
        colored = in_f & ~zero
        if colored.any():
            mappable = ax.scatter(
                xs[colored], ys[colored], c=c[colored], norm=norm, cmap="viridis", marker=marker[f], **_POINT_STYLE
            )
        if zero.any():
            ax.scatter(xs[zero], ys[zero], color="0.6", marker=marker[f], **_POINT_STYLE)
            n_zero += int(zero.sum())
        if f:  # legend proxy: the family's marker shape only
            ax.scatter(
                [], [], marker=marker[f], s=30, facecolors="none", edgecolors="0.15", label=f"{f} (n={in_f.sum()})"
            )
    if n_zero:
        what = "0" if logish else "missing"
        ax.scatter([], [], marker="o", s=30, color="0.6", label=f"{pretty} = {what} (n={n_zero})")
    if mappable is not None:
        cb = fig.colorbar(mappable, ax=ax, pad=0.01, fraction=0.05)
        long = "λ_g (group-LASSO strength)" if "lambda_g" in color_by else color_by
        cb.set_label(long + (", log scale" if isinstance(norm, LogNorm) else ""))


def _draw_extra_fronts(ax: Axes, extra: Mapping[str, pd.DataFrame], x: str, y: str, scale, step: str) -> None:
    """Other studies' pair fronts as dashed staircases (``report --compare``)."""
    for i, (name, fr) in enumerate(extra.items()):
        if fr.empty:
            continue
        fr = fr.sort_values(x, kind="stable")
        ax.plot(
            fr[x].to_numpy(float) * scale[0],
            fr[y].to_numpy(float) * scale[1],
            drawstyle=step,
            ls="--",
            lw=1.4,
            marker="D",
            ms=4.5,
            color=_FRONT_COLORS[i % len(_FRONT_COLORS)],
            zorder=3,
            label=f"{name} front (n={len(fr)})",
        )


def _draw_front(
    ax: Axes,
    pts: pd.DataFrame,
    feas,
    pair: dict,
    objectives: Mapping[str, Any],
    x: str,
    y: str,
    scale,
    step: str,
    front_label: str,
) -> pd.DataFrame:
    """Ring the front (the study's own over all objectives when known, else this pair's); returns it sorted."""
    pair_front = pareto_front(pts, pair)
    full = "on_front" in pts.columns and len(objectives) > 2
    front = pts[pts["on_front"].astype(bool) & feas] if full else pair_front
    if full and not pair_front.empty:
        pf = pair_front.sort_values(x, kind="stable")
        ax.plot(
            pf[x].to_numpy(float) * scale[0],
            pf[y].to_numpy(float) * scale[1],
            drawstyle=step,
            color="0.55",
            lw=1.0,
            ls="--",
            zorder=3,
            label=f"best in these two objectives only (n={len(pf)})",
        )
    front = front.sort_values(x, kind="stable")
    if not front.empty:
        fx, fy = front[x].to_numpy(float) * scale[0], front[y].to_numpy(float) * scale[1]
        if not full:
            ax.plot(fx, fy, drawstyle=step, color="black", lw=1.5, zorder=4)
        what = f"on the {len(objectives)}-objective front" if full else front_label
        ax.scatter(
            fx,
            fy,
            s=85,
            facecolors="none",
            edgecolors="black",
            linewidths=1.5,
            zorder=5,
            label=f"{what} (n={len(front)}; labels = trial #)",
        )
    return front


def _draw_highlight(ax: Axes, pts: pd.DataFrame, highlight: Mapping[int, str], x: str, y: str, scale) -> None:
    """Stars for the highlighted trials (the recommended knee, exported students)."""
    for k, (number, label) in enumerate(highlight.items()):
        row = pts[pts["number"] == number] if "number" in pts.columns else pts.iloc[:0]
        if row.empty:
            continue
        ax.scatter(
            row[x].to_numpy(float) * scale[0],
            row[y].to_numpy(float) * scale[1],
            marker="*",
            s=320,
            color=("gold", "tab:cyan", "tab:pink")[k % 3],
            edgecolors="black",
            linewidths=0.8,
            zorder=6,
            label=f"#{number}: {label}",
        )


def plot_pareto_pair(
    df: pd.DataFrame,
    x: str,
    y: str,
    objectives: Mapping[str, Any],
    color_by: str | None = "family",
    front_label: str = "front",
    extra_fronts: Mapping[str, pd.DataFrame] | None = None,
    *,
    annotate: bool = True,
    max_labels: int = 20,
    title: str | None = None,
    highlight: Mapping[int, str] | None = None,
    floors: Mapping[str, float] | None = None,
) -> Figure:
    """Scatter of all COMPLETE trials in the ``(x, y)`` plane with the pair's front.

    ``objectives`` gives the directions (columns missing from it are maximised if
    accuracy/AUROC-like, else minimised).  The non-dominated set for this pair
    (COMPLETE & feasible only) is drawn with ringed markers, joined as a staircase
    and labelled with trial numbers (at most ``max_labels``, evenly spread, both
    ends first; a label with no free spot near its point is dropped rather than
    overlapped).  ``extra_fronts`` maps a name to another
    study's trial table (or front); its pair front is drawn as a dashed staircase.

    When ``df`` has an ``on_front`` column (the front over *all* the study's objectives), those
    trials are the ringed, labelled ones, and the pair's own 2-D staircase is drawn thin and grey:
    with three objectives a trial can be on the front while dominated in one projection.
    ``highlight`` maps trial numbers to a label (``{12: "recommended (knee)"}``): drawn as stars.
    ``floors`` maps a column to a floor drawn as a dotted line (``{"kl": teacher_mc_floor_kl}``).
    Axes are logarithmic where the values span decades or a linear axis would squeeze most of them.
    """
    dx, dy = (objectives.get(c, guess_direction(c)) for c in (x, y))
    pair = {x: dx, y: dy}
    pts = complete_rows(df)
    pts = pts[np.isfinite(pts[x].astype(float)) & np.isfinite(pts[y].astype(float))]
    extra = {k: pareto_front(v, pair) for k, v in (extra_fronts or {}).items()}
    all_x = np.concatenate([pts[x].to_numpy(float)] + [v[x].to_numpy(float) for v in extra.values()])
    all_y = np.concatenate([pts[y].to_numpy(float)] + [v[y].to_numpy(float) for v in extra.values()])
    spx, spy = axis_spec(x, all_x), axis_spec(y, all_y)
    fig, ax = new_axes((8.0, 5.6))

    feas = eligible_mask(pts)
    if (~feas).any():
        bad = pts[~feas]
        ax.scatter(
            bad[x].to_numpy(float) * spx.scale,
            bad[y].to_numpy(float) * spy.scale,
            marker="x",
            color="0.6",
            s=22,
            linewidths=0.9,
            zorder=1,
            label=f"infeasible (n={len(bad)})",
        )
    if feas.any():
        _draw_points(ax, fig, pts[feas], x, y, spx.scale, spy.scale, color_by)

    step = step_style(dx)
    scale = (spx.scale, spy.scale)
    _draw_extra_fronts(ax, extra, x, y, scale, step)
    front = _draw_front(ax, pts, feas, pair, objectives, x, y, scale, step, front_label)
    fx, fy = front[x].to_numpy(float) * spx.scale, front[y].to_numpy(float) * spy.scale
    _draw_highlight(ax, pts, highlight or {}, x, y, scale)
    sgx, sgy = finish_axes(ax, all_x, all_y, spx, spy, dx, dy, title, floors, (x, y))
    if annotate and not front.empty:
        num = front["number"] if "number" in front.columns else pd.Series(front.index, index=front.index)
        keep = np.arange(len(front))
        if len(front) > max_labels:  # label both ends and an even subset in between
            keep = np.unique(np.linspace(0, len(front) - 1, max_labels).round().astype(int))
        annotate_front(ax, fig, fx[keep], fy[keep], [f"#{int(n)}" for n in num.to_numpy()[keep]], (-sgx, -sgy))
    return fig
