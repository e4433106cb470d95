"""Figures of a comparison (report/compare.py): fronts and hypervolume per setting, the summary bars,
the grid's scaling with student size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .tables import pareto_front

if TYPE_CHECKING:
    from .study_run import StudyRun

__all__ = [
    "method_names",
    "method_name",
    "method_color",
    "method_rank",
    "plot_setting",
    "plot_summary",
    "plot_grid_scaling",
]

METHOD_ORDER = ("grid", "prune", "tpe", "nsga2", "random", "qmc", "gp", "supernet", "halving")
METHOD_NAMES = {
    "grid": "paper's grid",
    "prune": "group-LASSO pruning",
    "tpe": "search (TPE)",
    "nsga2": "search (NSGA-II)",
    "random": "random search",
    "qmc": "search (Sobol QMC)",
    "gp": "search (GP)",
    "supernet": "supernet",
    "halving": "successive halving",
}
METHOD_COLORS = {
    "grid": "tab:blue",
    "prune": "tab:orange",
    "tpe": "tab:red",
    "nsga2": "tab:purple",
    "random": "tab:gray",
    "qmc": "tab:olive",
    "gp": "tab:pink",
    "supernet": "tab:green",
    "halving": "tab:cyan",
}


def _variant(m: str) -> tuple[str, str | None]:
    """``halving-b14`` -> (``halving``, ``14``): a strategy run in brackets of 14; else (m, None)."""
    base, _, rest = m.partition("-b")
    return (base, rest) if base in METHOD_ORDER and rest.isdigit() else (m, None)


def method_name(m: str) -> str:
    """The readable name of a method label (``halving-b14``: "successive halving, brackets of 14")."""
    base, n = _variant(m)
    return METHOD_NAMES.get(m, m) if n is None else f"{METHOD_NAMES.get(base, base)}, brackets of {n}"


def method_color(m: str, default: str = "black") -> str:
    base, n = _variant(m)
    return METHOD_COLORS.get(m, default) if n is None else "tab:brown"


def method_rank(m: str) -> float:
    """Where a method goes in tables and legends (a variant right after its strategy)."""
    base, n = _variant(m)
    return METHOD_ORDER.index(base) + (0.5 if n is not None else 0) if base in METHOD_ORDER else len(METHOD_ORDER)


def method_names(values) -> list[str]:
    seen = list(dict.fromkeys(values))
    return sorted(seen, key=lambda m: (method_rank(m), m))


def _staircase(ax, x, y, **kw) -> None:
    order = np.argsort(x)
    ax.plot(np.asarray(x)[order], np.asarray(y)[order], drawstyle="steps-post", **kw)


def plot_setting(
    runs: Sequence[StudyRun],
    curves: pd.DataFrame,
    *,
    budget: int | None = None,
    title: str = "",
    ref: np.ndarray | None = None,
) -> Figure:
    """Three panels: every seed's validation front (KL vs bytes), hypervolume vs trials, vs seconds.

    ``ref`` (the hypervolume's reference point) bounds the front panel: students worse than it in KL
    (near-empty pruned networks) are left off the axes, as they are left out of the volume."""
    fig = Figure(figsize=(15.0, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_f, ax_t, ax_s = fig.subplots(1, 3)
    for m in method_names(r.method for r in runs):
        color, label = method_color(m), method_name(m)
        for i, r in enumerate(x for x in runs if x.method == m):
            done = r.trials[r.trials["state"] == "COMPLETE"]
            ax_f.scatter(done["bytes_fp32"], done["kl"], s=9, color=color, alpha=0.25, lw=0)
            front = pareto_front(done, {"kl": "minimize", "bytes_fp32": "minimize"})
            _staircase(
                ax_f,
                front["bytes_fp32"].to_numpy(float),
                front["kl"].to_numpy(float),
                color=color,
                lw=1.4,
                alpha=0.9,
                label=f"{label} ({len(done)} trials/seed)" if i == 0 else None,
            )
        c = curves[curves["method"] == m]
        if c.empty:
            continue
        for ax, x in ((ax_t, "trials"), (ax_s, "seconds")):
            if x == "trials":
                g = c.groupby("trials")["hypervolume"]
                mean, lo, hi = g.mean(), g.min(), g.max()
                ax.plot(
                    mean.index,
                    mean.to_numpy(),
                    color=color,
                    lw=1.8,
                    drawstyle="steps-post",
                    label=f"{label} (mean of {c['seed'].nunique()} seeds, band min-max)",
                )
                ax.fill_between(mean.index, lo.to_numpy(), hi.to_numpy(), color=color, alpha=0.15, step="post")
            else:
                for j, (_, g) in enumerate(c.groupby("seed")):
                    ax.plot(
                        g["seconds"],
                        g["hypervolume"],
                        color=color,
                        lw=1.2,
                        drawstyle="steps-post",
                        alpha=0.8,
                        label=label if j == 0 else None,
                    )
    if budget:
        ax_t.axvline(budget, color="gray", ls=":", lw=1)
        ax_t.text(
            budget,
            ax_t.get_ylim()[0],
            f" {budget} = grid size",
            color="gray",
            fontsize=8,
            va="bottom",
        )
    ax_f.set_xscale("log")
    ax_f.set_yscale("log")
    if ref is not None:
        lo = min(float(r.trials.loc[r.trials["state"] == "COMPLETE", "kl"].min()) for r in runs)
        ax_f.set_ylim(0.8 * lo, 1.25 * float(ref[0]))
        ax_f.axhline(float(ref[0]), color="gray", ls=":", lw=1)
    ax_f.set_xlabel("student size [bytes, fp32]")
    ax_f.set_ylabel("KL(teacher || student) on validation")
    ax_f.set_title("fronts, one staircase per seed (lower left is better)", fontsize=10)
    ax_t.set_xlabel("trials spent")
    ax_s.set_xlabel("compute [s, one CPU thread; the shared teacher not counted]")
    for ax in (ax_t, ax_s):
        ax.set_ylabel("hypervolume in (val KL, log10 bytes)")
        ax.set_title("hypervolume (higher is better)", fontsize=10)
    for ax in (ax_f, ax_t, ax_s):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def plot_summary(summaries: Mapping[str, pd.DataFrame]) -> Figure:
    """One bar group per setting: each method's hypervolume relative to the paper's grid (mean over
    seeds, whiskers min-max), at the grid's trial budget and at the largest budget run."""
    fig = Figure(figsize=(max(7.0, 2.6 * len(summaries) + 2), 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    bars = []  # (setting index, label, method, budget, rel mean, rel min, rel max)
    for k, summ in enumerate(summaries.values()):
        grid = summ[summ["method"] == "grid"]
        if grid.empty:
            continue
        g_full = int(grid["trials"].max())  # the whole grid
        base = float(grid.loc[grid["trials"] == g_full, "hv_mean"].iloc[0])
        for m, rows in summ.groupby("method", sort=False):
            full = int(rows["trials"].max())
            for _, r in rows.iterrows():
                n = int(r["trials"])
                if n != g_full and n != full:  # a longer run cut at a shorter run's length: not shown
                    continue
                rel = (r["hv_mean"] / base, r["hv_min"] / base, r["hv_max"] / base)
                bars.append((k, m, n, *rel, n <= g_full))
    if not bars:
        ax.text(0.5, 0.5, "no setting with a grid study", ha="center", transform=ax.transAxes)
        return fig
    per = {}
    for b in bars:
        per.setdefault(b[0], []).append(b)
    width = 0.8 / max(len(v) for v in per.values())
    seen = set()
    for k, group in per.items():
        for j, (_, m, n, mean, lo, hi, at_grid) in enumerate(group):
            x = k - 0.4 + width * (j + 0.5)
            label = f"{method_name(m)}, {'at most the grid' + chr(39) + 's trials' if at_grid else f'{n} trials'}"
            ax.bar(
                x,
                mean,
                width * 0.9,
                color=method_color(m, "gray"),
                alpha=1.0 if at_grid else 0.55,
                hatch=None if at_grid else "//",
                edgecolor="black",
                lw=0.5,
                label=label if (m, at_grid) not in seen else None,
            )
            seen.add((m, at_grid))
            ax.errorbar(x, mean, yerr=[[mean - lo], [hi - mean]], color="black", capsize=3, lw=1)
    ax.axhline(1.0, color="black", lw=0.8, ls=":")
    names = list(summaries)
    ax.set_xticks(range(len(names)), [n.replace(", ", "\n", 1) for n in names], fontsize=8)
    ax.set_ylabel("hypervolume / the paper's grid's")
    lows = [b[4] for b in bars]
    ax.set_ylim(max(0.0, min(lows) - 0.05), max(b[5] for b in bars) + 0.05)
    ax.set_title(
        "Is the search worth it? Hypervolume in (val KL, log10 bytes) relative to the paper's grid\n"
        "(mean over seeds, whiskers min-max; solid: at the grid's trial budget, hatched: longer runs)",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def plot_grid_scaling(scaling: pd.DataFrame) -> Figure:
    """KL and expected-entropy error of the grid students against their size, per mask, with the
    teacher's Monte-Carlo floor on the KL axis."""
    fig = Figure(figsize=(13.0, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    metrics = (
        ("kl", "KL(teacher || student), validation"),
        ("expected_entropy_mae", "expected-entropy MAE [nats]"),
        ("expected_entropy_bias", "expected-entropy bias, student - teacher [nats]"),
    )
    colors = ["tab:blue", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for k, ((setting, mask), g0) in enumerate(scaling.groupby(["setting", "mask"], sort=True)):
        color = colors[k % len(colors)]
        for depth, g in g0.groupby("depth", dropna=False):
            g = g.sort_values("params")
            ls = "none" if pd.isna(depth) else "--" if depth == 1 else "-"  # CNN (m1 x m2): points
            name = f"{setting}" + ("" if pd.isna(depth) else f", {int(depth)} layer{'s' if depth != 1 else ''}")
            for ax, (m, _) in zip(axes, metrics):
                if f"{m}_mean" not in g:
                    continue
                ax.errorbar(
                    g["params"],
                    g[f"{m}_mean"],
                    yerr=g[f"{m}_sd"].fillna(0),
                    color=color,
                    ls=ls,
                    marker="o",
                    ms=3,
                    lw=1.3,
                    capsize=2,
                    label=name,
                )
        floor = g0["floor_kl"].dropna()
        if len(floor):
            axes[0].axhline(
                float(floor.iloc[0]),
                color=color,
                ls=":",
                lw=1,
                label=f"teacher MC floor, mask {mask}px",
            )
    for ax, (_, label) in zip(axes, metrics):
        ax.set_xscale("log")
        ax.set_xlabel("student parameters")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_yscale("log")
    axes[2].axhline(0, color="black", lw=0.8)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        "The paper's grid: what student size the predictive distribution and the expected entropy need "
        "(mean and sd over seeds)",
        fontsize=11,
    )
    return fig
