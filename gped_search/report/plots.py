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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import Bbox

from .tables import direction_signs, eligible_mask, pareto_front

__all__ = [
    "UNITS",
    "AxisSpec",
    "axis_spec",
    "plot_pareto_pair",
]

# Fixed labels (with units) for known columns.  ``bytes_*``, ``macs``, ``params`` and
# accuracy-like columns get a scaled unit chosen from the data in :func:`axis_spec`.
UNITS: dict[str, str] = {
    "kl": "KL(teacher‖student) [nats]",
    "kl_st": "KL(student‖teacher) [nats]",
    "expected_entropy_mae": "expected-entropy MAE [nats]",
    "expected_entropy_bias": "expected-entropy bias [nats]",
    "latency_ms": "latency [ms]",
    "ood_auroc": "OOD AUROC [fraction]",
    "macs": "MACs",
    "params": "parameters",
}
_SHORT = {
    "kl": "KL",
    "kl_st": "reverse KL",
    "expected_entropy_mae": "entropy MAE",
    "expected_entropy_bias": "entropy bias",
    "latency_ms": "latency",
    "macs": "MACs",
    "params": "parameters",
    "ood_auroc": "AUROC",
}
_FAMILY_MARKERS = ("o", "s", "^", "D", "v", "P")
_FRONT_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:olive")


@dataclass(frozen=True)
class AxisSpec:
    """How to show one column: multiply values by ``scale``; label with ``label``."""

    label: str
    scale: float = 1.0
    short: str = ""


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def _is_accuracy(name: str) -> bool:
    n = name.lower()
    return "acc" in n and "auroc" not in n


def _guess_direction(name: str) -> str:
    n = name.lower()
    return "maximize" if ("acc" in n or "auroc" in n) else "minimize"


def axis_spec(name: str, values: Any = ()) -> AxisSpec:
    """Label with units and value scaling for column ``name`` given its values.

    ``bytes_*`` -> B / KB / MB (decimal, 1 KB = 1000 B) by the largest value;
    ``macs``/``params`` -> plain / k / M; accuracy-like columns with values in
    [0, 1] -> percent.  Unknown columns keep their name with underscores spaced.
    """
    v = _finite(values)
    top = float(np.abs(v).max()) if v.size else 0.0
    if name in UNITS and name not in ("macs", "params"):
        return AxisSpec(UNITS[name], 1.0, _SHORT.get(name, name))
    if name.startswith("bytes"):
        what = name.removeprefix("bytes").strip("_") or "total"
        unit, scale = ("MB", 1e-6) if top >= 1e6 else ("KB", 1e-3) if top >= 1e3 else ("B", 1.0)
        return AxisSpec(f"storage, {what} [{unit}]", scale, "storage")
    if name in ("macs", "params"):
        suffix, scale = ("M", 1e-6) if top >= 1e6 else ("k", 1e-3) if top >= 1e4 else ("", 1.0)
        label = UNITS[name] + (f" [{suffix}]" if suffix else "")
        return AxisSpec(label, scale, _SHORT[name])
    if _is_accuracy(name):
        pretty = name.replace("_acc", " accuracy").replace("_", " ")
        pretty = "accuracy" if pretty == "acc" else pretty
        if top <= 1.0:
            return AxisSpec(f"{pretty} [%]", 100.0, "accuracy")
        return AxisSpec(f"{pretty} [%]", 1.0, "accuracy")
    return AxisSpec(name.replace("_", " "), 1.0, name.replace("_", " "))


def _wants_log(values: Any) -> bool:
    """Log scale when all finite data are positive and span more than 2 decades."""
    v = _finite(values)
    return bool(v.size >= 2 and (v > 0).all() and v.max() / v.min() > 100.0)


def _new_axes(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    fig = Figure(figsize=figsize, dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _complete_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[eligible_mask(df, feasible_col=None, state_col="state")]


# ------------------------------------------------------------------ pareto pair plot
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


def _step_style(direction_x: str) -> str:
    # dominated region lies right of a minimised x (steps-post) and left of a maximised x
    return "steps-post" if direction_signs([direction_x])[0] > 0 else "steps-pre"


def _annotate_front(
    ax: Axes,
    fig: Figure,
    xs: np.ndarray,
    ys: np.ndarray,
    labels: list[str],
    outward: tuple[float, float],
) -> None:
    """Label front points, greedily choosing offsets that avoid other labels/markers.

    ``outward`` points towards the ideal corner, where no trial can lie, so that
    side is tried first.
    """
    fig.canvas.draw()  # settle layout and limits so display coordinates are final
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    r = 6.0  # ringed-marker half-size in pixels
    taken = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in pts]
    others = [c.get_offsets() for c in ax.collections if len(c.get_offsets())]
    others += [ln.get_xydata() for ln in ax.lines if ln.get_marker() not in (None, "None", "")]
    for xy in others:  # every other marker is an obstacle too (smaller box)
        for qx, qy in ax.transData.transform(np.asarray(xy, dtype=float)):
            taken.append(Bbox.from_extents(qx - 3.5, qy - 3.5, qx + 3.5, qy + 3.5))
    ox, oy = outward
    dirs = [(ox, oy), (ox, 0), (0, oy), (-ox, oy), (ox, -oy), (-ox, 0), (0, -oy), (-ox, -oy)]
    cands = [(dx * d, dy * d) for d in (6, 14, 24) for dx, dy in dirs]
    order = [0, len(xs) - 1, *range(1, len(xs) - 1)] if len(xs) > 1 else [0]
    for i in order:  # both ends first, so the extremes are always labelled
        for dx, dy in cands:
            lead = {"arrowstyle": "-", "lw": 0.5, "color": "0.4", "shrinkA": 0, "shrinkB": 4}
            ann = ax.annotate(
                labels[i],
                (xs[i], ys[i]),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=8,
                color="0.1",
                arrowprops=lead if max(abs(dx), abs(dy)) > 10 else None,
                ha="center" if dx == 0 else ("left" if dx > 0 else "right"),
                va="center" if dy == 0 else ("bottom" if dy > 0 else "top"),
            )
            bb = ann.get_window_extent(renderer).expanded(1.06, 1.12)
            inside = ax.bbox.contains(bb.x0, bb.y0) and ax.bbox.contains(bb.x1, bb.y1)
            if inside and not any(bb.overlaps(t) for t in taken):
                taken.append(bb)
                ann.set_in_layout(False)
                break
            ann.remove()  # no free spot: the point stays ringed but unlabelled


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


def _finish_axes(ax: Axes, all_x, all_y, spx: AxisSpec, spy: AxisSpec, dx: str, dy: str, title: str | None):
    """Log scales where the data span decades, labels with units, the 'better' arrow, the legend."""
    for axis, set_scale, vals, sp in ((ax.xaxis, ax.set_xscale, all_x, spx), (ax.yaxis, ax.set_yscale, all_y, spy)):
        if _wants_log(vals):
            set_scale("log")
            v = _finite(vals) * sp.scale
            if np.log10(v.max() / v.min()) <= 6:  # plain numbers read better than 10^k here
                axis.set_major_formatter(FuncFormatter(lambda t, _: f"{t:g}"))
    ax.set_xlabel(spx.label)
    ax.set_ylabel(spy.label)
    ax.grid(True, which="major", alpha=0.3)
    sgx, sgy = direction_signs([dx, dy])
    arrow = {(1, 1): "↙", (1, -1): "↖", (-1, 1): "↘", (-1, -1): "↗"}[(int(sgx), int(sgy))]
    word = {1.0: "lower", -1.0: "higher"}
    head = title or f"{spy.short} vs {spx.short}"
    ax.set_title(f"{head}\nbetter {arrow}: {word[sgx]} {spx.short}, {word[sgy]} {spy.short}", fontsize=11)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, framealpha=0.9, loc="best")
    return sgx, sgy


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
    """
    dx, dy = (objectives.get(c, _guess_direction(c)) for c in (x, y))
    pair = {x: dx, y: dy}
    pts = _complete_rows(df)
    pts = pts[np.isfinite(pts[x].astype(float)) & np.isfinite(pts[y].astype(float))]
    extra = {k: pareto_front(v, pair) for k, v in (extra_fronts or {}).items()}
    all_x = np.concatenate([pts[x].to_numpy(float)] + [v[x].to_numpy(float) for v in extra.values()])
    all_y = np.concatenate([pts[y].to_numpy(float)] + [v[y].to_numpy(float) for v in extra.values()])
    spx, spy = axis_spec(x, all_x), axis_spec(y, all_y)
    fig, ax = _new_axes((8.0, 5.6))

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

    step = _step_style(dx)
    scale = (spx.scale, spy.scale)
    _draw_extra_fronts(ax, extra, x, y, scale, step)
    front = _draw_front(ax, pts, feas, pair, objectives, x, y, scale, step, front_label)
    fx, fy = front[x].to_numpy(float) * spx.scale, front[y].to_numpy(float) * spy.scale
    _draw_highlight(ax, pts, highlight or {}, x, y, scale)
    sgx, sgy = _finish_axes(ax, all_x, all_y, spx, spy, dx, dy, title)
    if annotate and not front.empty:
        num = front["number"] if "number" in front.columns else pd.Series(front.index, index=front.index)
        keep = np.arange(len(front))
        if len(front) > max_labels:  # label both ends and an even subset in between
            keep = np.unique(np.linspace(0, len(front) - 1, max_labels).round().astype(int))
        _annotate_front(ax, fig, fx[keep], fy[keep], [f"#{int(n)}" for n in num.to_numpy()[keep]], (-sgx, -sgy))
    return fig
