"""Axes of the report's figures: labels with units, value scales, log scales where the data span
decades, the 'better' arrow, and reference lines (the teacher's Monte-Carlo floor)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from .tables import direction_signs, eligible_mask

__all__ = [
    "UNITS",
    "AxisSpec",
    "axis_spec",
    "FLOOR_LABEL",
    "draw_floors",
    "finite",
    "guess_direction",
    "wants_log",
    "new_axes",
    "complete_rows",
    "step_style",
    "finish_axes",
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


def finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def _is_accuracy(name: str) -> bool:
    n = name.lower()
    return "acc" in n and "auroc" not in n


def guess_direction(name: str) -> str:
    n = name.lower()
    return "maximize" if ("acc" in n or "auroc" in n) else "minimize"


def axis_spec(name: str, values: Any = ()) -> AxisSpec:
    """Label with units and value scaling for column ``name`` given its values.

    ``bytes_*`` -> B / KB / MB (decimal, 1 KB = 1000 B) by the largest value;
    ``macs``/``params`` -> plain / k / M; accuracy-like columns with values in
    [0, 1] -> percent.  Unknown columns keep their name with underscores spaced.
    """
    v = finite(values)
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


def wants_log(values: Any) -> bool:
    """Log scale when all finite data are positive and either span more than 2 decades, or span more
    than one and a linear axis would squeeze half of them into its first fifth (a few large students
    pushing the small ones, where the front usually is, against the origin)."""
    v = finite(values)
    if not (v.size >= 2 and (v > 0).all()):
        return False
    lo, hi = float(v.min()), float(v.max())
    if hi / lo > 100.0:
        return True
    return bool(hi / lo > 10.0 and (np.median(v) - lo) / (hi - lo) < 0.2)


def new_axes(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    fig = Figure(figsize=figsize, dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def complete_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[eligible_mask(df, feasible_col=None, state_col="state")]


def step_style(direction_x: str) -> str:
    # dominated region lies right of a minimised x (steps-post) and left of a maximised x
    return "steps-post" if direction_signs([direction_x])[0] > 0 else "steps-pre"


def finish_axes(
    ax: Axes,
    all_x,
    all_y,
    spx: AxisSpec,
    spy: AxisSpec,
    dx: str,
    dy: str,
    title: str | None,
    floors: Mapping[str, float] | None = None,
    names: tuple[str, str] = ("", ""),
):
    """Log scales where the data span decades, floor lines, labels with units, the 'better' arrow, the
    legend. ``names`` are the x and y columns ``floors`` is keyed by."""
    for axis, set_scale, vals, sp in ((ax.xaxis, ax.set_xscale, all_x, spx), (ax.yaxis, ax.set_yscale, all_y, spy)):
        if wants_log(vals):
            set_scale("log")
            v = finite(vals) * sp.scale
            if np.log10(v.max() / v.min()) <= 6:  # plain numbers read better than 10^k here
                axis.set_major_formatter(FuncFormatter(lambda t, _: f"{t:g}"))
    if floors:
        draw_floors(ax, floors, names[0], names[1], (spx.scale, spy.scale))
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


FLOOR_LABEL = "teacher's Monte-Carlo floor"
"""Legend text of the floor line: a student KL at that scale is teacher noise, not student error."""


def draw_floors(ax: Axes, floors: Mapping[str, float], x: str, y: str, scale: tuple[float, float]) -> None:
    """A dotted line at each axis's floor (``floors`` maps a column to a value, e.g. ``{"kl":
    teacher_mc_floor_kl}``). The axis widens to show a floor below the data by up to half its span (in
    log units on a log axis); a floor further below stays off the axis and the legend says where it is."""
    for col, vertical, k in ((x, True, 0), (y, False, 1)):
        value = floors.get(col)
        if value is None or not np.isfinite(value) or value <= 0:
            continue
        v = float(value) * scale[k]
        lo, hi = ax.get_xlim() if vertical else ax.get_ylim()
        f = np.log10 if (ax.get_xscale() if vertical else ax.get_yscale()) == "log" else (lambda t: t)
        if v < lo and f(lo) - f(v) <= 0.5 * (f(hi) - f(lo)):
            lo = v - 0.05 * (hi - v) if f(1.0) == 1.0 else v / 1.2
            (ax.set_xlim if vertical else ax.set_ylim)(lo, hi)
        label = f"{FLOOR_LABEL} ({value:.3g})"
        if v < lo:
            ax.plot([], [], ls=":", color="tab:green", lw=1.4, label=f"{label}, below the axis")
            continue
        line = ax.axvline if vertical else ax.axhline
        line(v, ls=":", color="tab:green", lw=1.4, zorder=1, label=label)
