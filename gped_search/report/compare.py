"""Compare ways of getting a front (the paper's grid, pruning, a search) over seeds, per setting.

Pure: every function takes trial frames (``search.trials_frame``) and study settings, and returns
frames, figures or text; :func:`write_comparison` writes them. A *setting* is one teacher (studies
that trained against the same teacher key and length); a *method* is how a study chose its students
(:func:`method_label`); a *seed* is the study's search seed.

Hypervolume is measured in (validation KL, log10 bytes): bytes span three decades, and on a linear
scale the largest students alone would set the volume. One reference point per setting
(:func:`hv_reference`) makes the volumes of its methods comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .compare_plots import (  # noqa: F401  (figures re-exported)
    METHOD_COLORS,
    METHOD_NAMES,
    METHOD_ORDER,
    method_name,
    method_names,
    method_rank,
    plot_grid_scaling,
    plot_setting,
    plot_summary,
)
from .compare_tables import (  # noqa: F401  (re-exported)
    SIZE_CAPS,
    best_under_caps,
    caps_digest,
    front_digest,
    grid_scaling,
    md_table,
    size_caps,
    size_needed,
)
from .compute import compute_table
from .run_files import write_runs
from .study_run import StudyRun, method_label, setting_label  # noqa: F401  (re-exported)
from .tables import hypervolume_history, pareto_front, reference_point

__all__ = [
    "StudyRun",
    "method_label",
    "setting_label",
    "busy_seconds",
    "hv_curves",
    "hv_summary",
    "front_members",
    "grid_scaling",
    "best_under_caps",
    "size_caps",
    "plot_setting",
    "plot_grid_scaling",
    "plot_summary",
    "write_comparison",
    "HV_OBJECTIVES",
]

HV_OBJECTIVES = {"kl": "minimize", "log10_bytes": "minimize"}
"""The hypervolume's axes: validation KL and log10 of the student's fp32 bytes."""

TEST_COLUMNS = (
    "test_kl",
    "test_student_acc",
    "test_expected_entropy_mae",
    "test_expected_entropy_bias",
    "test_ood_auroc",
)


def busy_seconds(trials: pd.DataFrame) -> np.ndarray:
    """Wall seconds the study had spent when each trial (in ``number`` order) finished.

    The union of the intervals of the trials finished so far: trials trained together in one
    lockstep batch (or by parallel workers) are not counted twice. The shared teacher is not counted.
    """
    if trials.empty or "datetime_start" not in trials.columns:  # a study with no trial yet
        return np.zeros(len(trials))
    t = trials.sort_values("number")
    start = pd.to_datetime(t["datetime_start"]).to_numpy()
    end = pd.to_datetime(t["datetime_complete"]).to_numpy()
    out, spans = [], []
    for a, b in zip(start, end):
        if not pd.isna(a) and not pd.isna(b):
            spans.append((a, b))
        busy, last = 0.0, None
        for s, e in sorted(spans):
            if last is None or s > last:
                busy += (e - s) / np.timedelta64(1, "s")
                last = e
            elif e > last:
                busy += (e - last) / np.timedelta64(1, "s")
                last = e
        out.append(busy)
    return np.asarray(out, dtype=float)


def _hv_frame(trials: pd.DataFrame) -> pd.DataFrame:
    df = trials.copy()
    df["log10_bytes"] = np.log10(df["bytes_fp32"].astype(float))
    return df


def hv_reference(runs: Sequence[StudyRun]) -> np.ndarray:
    """One reference point for the runs of a setting, in (KL, log10 bytes).

    Bytes: the largest student of any run, plus 10 % of the log range. KL: 1.1 x the worst KL of the
    paper's grid when the setting has one (the smallest grid student), so that near-empty students
    (a very strong pruning penalty leaves a few units and KL ~ 2) neither count nor stretch the
    scale; without a grid, the worst KL of all runs + 10 % of the range.
    """
    pool = pd.concat([_hv_frame(r.trials) for r in runs], ignore_index=True)
    ref = reference_point(pool, HV_OBJECTIVES)
    grid = [r.trials for r in runs if r.method == "grid"]
    if grid:
        g = pd.concat(grid, ignore_index=True)
        kl = g.loc[g["state"] == "COMPLETE", "kl"].astype(float)
        if np.isfinite(kl).any():
            ref[0] = 1.1 * float(kl.max())
    return ref


def hv_curves(runs: Sequence[StudyRun], ref: np.ndarray | None = None) -> pd.DataFrame:
    """Hypervolume after each trial of each run: columns study, method, seed, trials, seconds, hypervolume."""
    ref = hv_reference(runs) if ref is None else ref
    out = []
    for r in runs:
        t = _hv_frame(r.trials).sort_values("number")
        h = hypervolume_history(t, HV_OBJECTIVES, ref)
        out.append(
            pd.DataFrame(
                {
                    "study": r.name,
                    "method": r.method,
                    "seed": r.seed,
                    "trials": np.arange(1, len(t) + 1),
                    "seconds": busy_seconds(t) + r.overhead_seconds,
                    "hypervolume": h["hypervolume"].to_numpy(),
                }
            )
        )
    return (
        pd.concat(out, ignore_index=True)
        if out
        else pd.DataFrame(columns=["study", "method", "seed", "trials", "seconds", "hypervolume"])
    )


def hv_summary(curves: pd.DataFrame, budgets: Sequence[int]) -> pd.DataFrame:
    """Hypervolume at each trial budget (mean, sd, min, max over seeds) and the seconds it took.

    A run shorter than a budget does not count at that budget; budgets no run reached are left out.
    """
    rows = []
    for method, budget in [(m, b) for m in method_names(curves["method"]) for b in sorted(set(budgets))]:
        at = curves[(curves["method"] == method) & (curves["trials"] == budget)]
        if at.empty:
            continue
        hv = at["hypervolume"].to_numpy(float)
        rows.append(
            {
                "method": method,
                "trials": budget,
                "seeds": len(at),
                "hv_mean": hv.mean(),
                "hv_sd": hv.std(ddof=1) if len(hv) > 1 else float("nan"),
                "hv_min": hv.min(),
                "hv_max": hv.max(),
                "seconds_mean": at["seconds"].mean(),
            }
        )
    return pd.DataFrame(rows)


def front_members(runs: Sequence[StudyRun], budget: int | None = None) -> pd.DataFrame:
    """Each run's validation front (KL, bytes) over its first ``budget`` trials, with test metrics."""
    rows = []
    for r in runs:
        t = r.trials.sort_values("number")
        if budget is not None:
            t = t.head(budget)
        done = t[t["state"] == "COMPLETE"]
        if done.empty:
            continue
        front = pareto_front(done, {"kl": "minimize", "bytes_fp32": "minimize"})
        cols = [c for c in ("number", "arch", "lambda_g", "kl", "bytes_fp32", *TEST_COLUMNS) if c in front]
        f = front[cols].copy()
        f.insert(0, "seed", r.seed)
        f.insert(0, "study", r.name)
        f.insert(0, "method", r.method)
        rows.append(f)
    if not rows:
        return pd.DataFrame()
    out = pd.concat(rows, ignore_index=True)
    out["_m"] = out["method"].map(method_rank)
    return out.sort_values(["_m", "seed", "bytes_fp32"]).drop(columns="_m").reset_index(drop=True)


# ------------------------------------------------------------------ writing
def write_comparison(runs: Sequence[StudyRun], out_dir: str | Path, budgets: Sequence[int] | None = None) -> dict:
    """Per setting: the figure, hypervolume table and test metrics of each front; plus the grid scaling.

    ``budgets``: trial counts at which to compare hypervolume (default: the grid's trial count and
    every run's own length, per setting). Writes ``comparison.md``, ``<setting>.png``, ``hv_<setting>.csv``,
    ``fronts_<setting>.csv``, ``grid_scaling.png/csv``; returns what it wrote and the summaries.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, summaries = {}, {}
    lines = ["# Grid vs pruning vs search", ""]
    for setting, rs in _by_setting(runs).items():
        slug = "".join(c if c.isalnum() else "_" for c in setting.lower()).strip("_")
        summaries[setting], more = _write_setting(out, setting, slug, rs, budgets)
        written[setting] = str(out / f"{slug}.png")
        lines += more
    lines[1:1] = _write_summary(out, summaries, written)
    lines += _write_grid_scaling(out, runs, written)
    write_runs(runs, out / "trials")
    lines += [
        "Every study's trials (all columns, start and end times) and settings are in `trials/`; "
        f"`gped-search compare {out.name}/trials --out {out.name}` recomputes this page from them.",
        "",
    ]
    (out / "comparison.md").write_text("\n".join(lines))
    written["comparison_md"] = str(out / "comparison.md")
    return {"written": written, "summaries": summaries}


def _by_setting(runs: Sequence[StudyRun]) -> dict[str, list[StudyRun]]:
    """The runs grouped by setting, in the order of the page."""
    settings: dict[str, list[StudyRun]] = {}
    for r in runs:
        settings.setdefault(r.setting, []).append(r)

    def order(item):  # MLP before CNN, then by dataset and occlusion size (numerically)
        c = item[1][0].config
        return (
            str(c.get("student", {}).get("family", "")) != "mlp",
            str(c.get("data", {}).get("dataset", "")),
            int(c.get("data", {}).get("mask_size", 0) or 0),
        )

    return dict(sorted(settings.items(), key=order))


def _write_setting(out: Path, setting: str, slug: str, rs: list[StudyRun], budgets) -> tuple[pd.DataFrame, list[str]]:
    """One setting's figure and CSV files; returns its hypervolume summary and its section of the page."""
    grid_n = max((len(r.trials) for r in rs if r.method == "grid"), default=None)
    bs = list(budgets) if budgets else sorted({b for b in (grid_n, *(len(r.trials) for r in rs)) if b})
    curves = hv_curves(rs)
    summary = hv_summary(curves, bs)
    fig = plot_setting(rs, curves, budget=grid_n, title=setting, ref=hv_reference(rs))
    fig.savefig(out / f"{slug}.png", dpi=110)
    curves.to_csv(out / f"hv_{slug}.csv", index=False)
    fronts = front_members(rs)
    caps = best_under_caps(rs, size_caps(rs), budgets=bs)
    caps.to_csv(out / f"best_under_caps_{slug}.csv", index=False)
    fronts.to_csv(out / f"fronts_{slug}.csv", index=False)
    ref = hv_reference(rs)
    return summary, [
        f"## {setting}",
        "",
        f"![{setting}]({slug}.png)",
        "",
        f"Hypervolume in (validation KL, log10 bytes), reference point KL {ref[0]:.4g}"
        + (" (1.1 x the grid's worst)" if any(r.method == "grid" for r in rs) else "")
        + f", {10 ** ref[1]:,.0f} bytes; mean (sd, min-max) over seeds; seconds: wall time of the "
        "trials on one CPU thread, the shared teacher not counted.",
        "",
        md_table(summary.assign(method=summary["method"].map(method_name))),
        "",
        f"Each method's validation front (its lowest seed; every seed in [fronts_{slug}.csv](fronts_{slug}.csv)) "
        "with its test metrics:",
        "",
        md_table(front_digest(fronts)),
        "",
        "Hypervolume against compute (seconds of student training and scoring on one thread, the teacher "
        "not counted; a supernet's distillation and scoring included), against the grid's mean:",
        "",
        md_table(compute_table(curves)) if (curves["method"] == "grid").any() else "(no grid study)",
        "",
        "The student each method offers under a size budget (lowest validation KL among its trials no larger "
        "than the budget), reported on test; mean (sd) over seeds:",
        "",
        md_table(caps_digest(caps)),
        "",
    ]


def _write_summary(out: Path, summaries: dict, written: dict) -> list[str]:
    """The summary figure relative to the grid (or why there is none); returns the page's lines for it."""
    with_grid = {k: v for k, v in summaries.items() if (v["method"] == "grid").any()} if summaries else {}
    if with_grid:  # the summary is relative to the paper's grid: without one it would be an empty figure
        plot_summary(with_grid).savefig(out / "summary.png", dpi=110)
        written["summary"] = str(out / "summary.png")
        return ["", "![summary](summary.png)", ""]
    if summaries:
        return [
            "",
            "No setting has a grid study, so there is no summary relative to the grid; the "
            "hypervolume tables below compare the studies directly.",
            "",
        ]
    return []


def _write_grid_scaling(out: Path, runs: Sequence[StudyRun], written: dict) -> list[str]:
    """The grid by student size (figure, CSV files); returns the page's section for it, if any."""
    scaling = grid_scaling(runs)
    if scaling.empty:
        return []
    fig = plot_grid_scaling(scaling)
    fig.savefig(out / "grid_scaling.png", dpi=110)
    scaling.to_csv(out / "grid_scaling.csv", index=False)
    need = pd.concat([size_needed(scaling, m) for m in ("kl", "expected_entropy_mae")], ignore_index=True)
    need.to_csv(out / "size_needed.csv", index=False)
    written["grid_scaling"] = str(out / "grid_scaling.png")
    return [
        "## The grid by student size",
        "",
        "![grid scaling](grid_scaling.png)",
        "",
        "Smallest grid student within 10 % of the best grid value (mean over seeds):",
        "",
        md_table(need),
        "",
    ]
