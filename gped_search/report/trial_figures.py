"""Figures of how each trial ran: its learning curve (the distillation loss at the 20 points every trial
stores) and its duration."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .axes import new_axes

__all__ = ["plot_learning_curves", "plot_durations"]

_STATE_COLORS = {"COMPLETE": "tab:blue", "FAIL": "tab:red", "PRUNED": "tab:orange", "RUNNING": "0.6"}


def plot_learning_curves(
    curves: Mapping[int, Mapping[int, float]],
    on_front: set[int] = frozenset(),
    highlight: Mapping[int, str] | None = None,
    *,
    title: str = "Learning curves",
) -> Figure:
    """The distillation loss against the step, one line per trial (``curves``: trial -> step -> loss):
    front members coloured and labelled, the rest grey; highlighted trials (the knee) thick. The loss axis
    is logarithmic when every value is positive."""
    fig, ax = new_axes((7.6, 4.6))
    highlight = highlight or {}
    if not curves:
        ax.text(0.5, 0.5, "no trial recorded a learning curve", ha="center", transform=ax.transAxes)
        return fig
    values = np.concatenate([np.asarray(list(c.values()), float) for c in curves.values() if c])
    k = 0
    for number in sorted(curves):
        c = curves[number]
        if not c:
            continue
        steps = np.asarray(sorted(c), float)
        loss = np.asarray([c[s] for s in sorted(c)], float)
        if number in highlight:
            ax.plot(steps, loss, color="black", lw=2.6, zorder=4, label=f"#{number}: {highlight[number]}")
        elif number in on_front:
            ax.plot(steps, loss, color=f"C{k % 10}", lw=1.4, zorder=3, label=f"#{number} (front)")
            k += 1
        else:
            ax.plot(steps, loss, color="0.7", lw=0.8, alpha=0.7, zorder=1)
    n_other = sum(1 for n in curves if n not in on_front and n not in highlight)
    if n_other:
        ax.plot([], [], color="0.7", lw=0.8, label=f"other trials (n={n_other})")
    finite = values[np.isfinite(values)]
    if finite.size and (finite > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("distillation step")
    ax.set_ylabel("distillation loss (training minibatches)")
    ax.set_title(f"{title} (lower is better)", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_durations(df: pd.DataFrame, *, title: str = "Trial durations") -> Figure:
    """Wall-clock seconds of each trial (``duration_s``) by trial number, coloured by state."""
    fig, ax = new_axes((7.6, 3.6))
    d = df[["number", "state", "duration_s"]].dropna(subset=["duration_s"]) if "duration_s" in df else df.iloc[:0]
    if d.empty:
        ax.text(0.5, 0.5, "no finished trial", ha="center", transform=ax.transAxes)
        return fig
    d = d.sort_values("number")
    for state, g in d.groupby("state", sort=False):
        ax.bar(
            g["number"].to_numpy(),
            g["duration_s"].to_numpy(float),
            color=_STATE_COLORS.get(str(state), "0.4"),
            label=f"{str(state).lower()} (n={len(g)})",
        )
    secs = d["duration_s"].to_numpy(float)
    ax.set_xlabel("trial number")
    ax.set_ylabel("wall-clock time [s]")
    ax.set_title(
        f"{title}: total {secs.sum() / 60:.1f} min, median {np.median(secs):.3g} s, longest {secs.max():.3g} s",
        fontsize=11,
    )
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig
