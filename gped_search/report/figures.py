"""The report's other figures: hypervolume history, ROC, accuracy-rejection, parallel coordinates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from .axes import axis_spec, complete_rows, finite, guess_direction, new_axes, wants_log
from .tables import direction_signs

__all__ = ["plot_hypervolume", "plot_roc", "plot_accuracy_rejection", "plot_parallel", "plot_robustness"]


def plot_hypervolume(
    history: pd.DataFrame | Mapping[str, pd.DataFrame],
    *,
    title: str = "Hypervolume vs trial",
    ylabel: str = "hypervolume [product of objective units]",
) -> Figure:
    """Hypervolume (higher is better) against trial number, one line per study.

    ``history`` is a ``hypervolume_history`` frame (columns ``trial``,
    ``hypervolume``; an optional ``study`` column splits it into lines) or a
    mapping ``{study name: such a frame}``.
    """
    if isinstance(history, Mapping):
        groups = list(history.items())
    elif "study" in history.columns:
        groups = [(str(k), g) for k, g in history.groupby("study", sort=False)]
    else:
        groups = [("hypervolume", history)]
    fig, ax = new_axes((7.0, 4.2))
    eng = EngFormatter(sep="", places=3)
    for name, g in groups:
        g = g.sort_values("trial")
        final = f" (final {eng.format_eng(float(g['hypervolume'].iloc[-1]))})" if len(g) else ""
        ax.plot(
            g["trial"].to_numpy(),
            g["hypervolume"].to_numpy(float),
            drawstyle="steps-post",
            lw=1.8,
            label=f"{name}{final}",
        )
    ax.yaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel("trial number")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} (higher is better)", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_roc(curves: Mapping[str, Sequence[Any]], *, title: str = "OOD detection ROC") -> Figure:
    """ROC curves; ``curves`` maps a name to ``(fpr, tpr, auc)`` (``auc`` may be None)."""
    fig, ax = new_axes((5.6, 5.2))
    for name, (fpr, tpr, auc) in curves.items():
        f, t = np.asarray(fpr, float), np.asarray(tpr, float)
        if auc is None:
            order = np.argsort(f, kind="stable")
            auc = float(np.sum(np.diff(f[order]) * (t[order][1:] + t[order][:-1]) / 2))
        ax.plot(f, t, lw=1.8, label=f"{name} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1, label="chance (0.5)")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false-positive rate [fraction]",
        ylabel="true-positive rate [fraction]",
    )
    ax.set_aspect("equal")
    ax.set_title(f"{title} (upper-left is better)", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_accuracy_rejection(curves: Mapping[str, Sequence[Any]], *, title: str = "Accuracy–rejection") -> Figure:
    """Accuracy on the retained inputs vs the fraction rejected (most uncertain first).

    ``curves`` maps a name to ``(fractions, accuracies)``; fractions in [0, 1] and
    accuracies in [0, 1] (or already in percent) are shown in percent. The accuracy axis is scaled
    to the typical model (:func:`_accuracy_floor`), not the worst: a curve that starts below it is
    cut at the axis and its legend entry says where it starts.
    """
    fig, ax = new_axes((6.4, 4.4))
    all_acc = np.concatenate([finite(a) for _, a in curves.values()] or [np.zeros(0)])
    acc_scale = 100.0 if all_acc.size == 0 or all_acc.max() <= 1.0 else 1.0
    starts = [float(np.asarray(a, float)[0]) * acc_scale for _, a in curves.values() if len(a)]
    low = _accuracy_floor(starts)
    for name, (frac, acc) in curves.items():
        y = np.asarray(acc, float) * acc_scale
        below = low is not None and len(y) and y[0] < low
        ax.plot(
            np.asarray(frac, float) * 100.0,
            y,
            lw=1.8,
            marker="." if len(frac) <= 30 else None,
            label=f"{name} (starts at {y[0]:.1f} %, below the axis)" if below else name,
        )
    if low is not None:
        ax.set_ylim(low, 100.0 + 0.04 * (100.0 - low))
    ax.set_xlabel("rejected fraction [%]")
    ax.set_ylabel("accuracy on retained inputs [%]")
    ax.set_xlim(0, 100)
    ax.set_title(f"{title} (higher is better)", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _accuracy_floor(starts: Sequence[float]) -> float | None:
    """The accuracy axis's lower end [%]: three times the median model's error below 100 %, or the
    lowest start when that is higher; None (autoscale) when no curve starts below it."""
    if len(starts) < 2:
        return None
    err = 100.0 - float(np.median(starts))
    low = max(min(starts), 100.0 - 3.0 * max(err, 0.5))
    return low if min(starts) < low else None


def plot_robustness(table: pd.DataFrame, *, title: str = "Adversarial robustness (L-infinity)") -> Figure:
    """Accuracy and predictive entropy against eps, one line per model and attack (eps 0 = clean)."""
    from matplotlib.figure import Figure as _Figure

    fig = _Figure(figsize=(11.5, 4.4), layout="constrained")  # fits inside the figure: saved uncropped
    axes = fig.subplots(1, 2)
    clean = table[table["attack"] == "clean"].set_index("model")
    attacked = table[table["attack"] != "clean"]
    color = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(attacked["model"]))}  # one colour per model
    for (model, attack), d in attacked.groupby(["model", "attack"], sort=False):
        d = d.sort_values("eps")
        eps = np.concatenate(([0.0], d["eps"].to_numpy(float)))
        for ax, col, scale in ((axes[0], "accuracy", 100.0), (axes[1], "entropy", 1.0)):
            y = np.concatenate(([clean.loc[model, col]], d[col].to_numpy(float))) * scale
            style = "-" if attack == "pgd" else "--"
            ax.plot(eps, y, marker="o", ls=style, lw=1.6, color=color[model], label=f"{model}, {attack}")
    axes[0].set(xlabel="eps [pixel value, inputs in [0, 1]]", ylabel="accuracy under attack [%]")
    axes[1].set(xlabel="eps [pixel value, inputs in [0, 1]]", ylabel="mean predictive entropy [nats]")
    axes[0].set_title("accuracy (higher is better)", fontsize=11)
    axes[1].set_title("predictive entropy (rises when the model notices)", fontsize=11)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}; solid PGD, dashed FGSM", fontsize=11)
    return fig


def plot_parallel(
    df: pd.DataFrame,
    axes_cols: Sequence[str],
    objectives: Mapping[str, Any],
    *,
    highlight: Mapping[int, str] | None = None,
    title: str = "Every trial over every objective",
) -> Figure:
    """Parallel coordinates: one line per COMPLETE trial across ``axes_cols`` (each scaled 0..1 over
    the trials, log first when it spans more than a decade; maximised columns flipped so that lower
    is better on every axis). Front trials (``on_front``) in red, highlighted trials as thick gold."""
    pts = complete_rows(df)
    cols = [c for c in axes_cols if c in pts.columns and np.isfinite(pts[c].astype(float)).any()]
    fig, ax = new_axes((max(6.0, 1.9 * len(cols) + 1.5), 4.6))
    if pts.empty or len(cols) < 2:
        ax.text(
            0.5,
            0.5,
            "fewer than two complete trials or objectives",
            ha="center",
            transform=ax.transAxes,
        )
        return fig
    scaled, ticks = [], []
    for c in cols:
        v = pts[c].to_numpy(float)
        logged = wants_log(v) and (v[np.isfinite(v)] > 0).all()
        w = np.log10(v) if logged else v.copy()
        lo, hi = np.nanmin(w), np.nanmax(w)
        u = (w - lo) / (hi - lo) if hi > lo else np.zeros_like(w)
        flip = direction_signs([objectives.get(c, guess_direction(c))])[0] < 0
        scaled.append(1 - u if flip else u)
        best, worst = (np.nanmax(v), np.nanmin(v)) if flip else (np.nanmin(v), np.nanmax(v))
        ticks.append((best, worst, logged))
    m = np.column_stack(scaled)
    xs = np.arange(len(cols))
    on = pts["on_front"].astype(bool).to_numpy() if "on_front" in pts.columns else np.zeros(len(pts), bool)
    nums = pts["number"].to_numpy() if "number" in pts.columns else np.arange(len(pts))
    for row, front in zip(m, on):
        if not front:
            ax.plot(xs, row, color="0.6", alpha=0.35, lw=0.8, zorder=1)
    for row, front in zip(m, on):
        if front:
            ax.plot(xs, row, color="tab:red", alpha=0.8, lw=1.2, zorder=2)
    ax.plot([], [], color="0.6", label=f"dominated (n={int((~on).sum())})")
    ax.plot([], [], color="tab:red", label=f"on the front (n={int(on.sum())})")
    for number, label in (highlight or {}).items():
        hit = np.flatnonzero(nums == number)
        if hit.size:
            ax.plot(xs, m[hit[0]], color="gold", lw=3.2, zorder=3, label=f"#{number}: {label}")
    for i, (c, (best, worst, _logged)) in enumerate(zip(cols, ticks)):
        ax.axvline(i, color="0.2", lw=0.8, zorder=0)
        spec = axis_spec(c, pts[c].to_numpy(float))
        ax.text(i, -0.06, f"{best * spec.scale:.4g}", ha="center", va="top", fontsize=8)
        ax.text(i, 1.06, f"{worst * spec.scale:.4g}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, [axis_spec(c, pts[c].to_numpy(float)).label for c in cols], fontsize=8)
    ax.set_yticks([0, 1], ["best", "worst"])
    ax.set_ylim(-0.15, 1.15)
    ax.set_title(f"{title} (each axis scaled over the trials; lower is better)", fontsize=11)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
