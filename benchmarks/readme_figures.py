"""The README's and write-ups' generated tables and images, from committed data, so they cannot drift.

    python benchmarks/readme_figures.py            # rewrite every generated block and image
    python benchmarks/readme_figures.py --check    # exit 1 (and say which) when a block differs

A generated block in a Markdown file sits between ``<!-- generated: NAME -->`` and
``<!-- /generated -->``; NAME is one of :data:`BLOCKS`, each a function of committed CSV files:

* ``headline-hypervolume`` (README.md): the headline comparison's hypervolumes, mean (sd) over the
  search seeds at each method's trial budget, from ``reports/headline_comparison/hv_*.csv``;
* ``grid-scaling`` (reports/headline_comparison/README.md): the best grid student and the 400-400
  student per mask, from ``reports/headline_comparison/grid_scaling.csv``;
* ``teacher-recipe`` (README.md): why the MNIST MLP studies use BDK's teacher recipe, from
  ``reports/teacher_recipe/cells.csv``;
* ``strategies-compute`` (reports/strategies/README.md): hypervolume against compute per search
  strategy (issue 25), from ``reports/strategies/hv_mlp_students__mnist__mask_0px.csv``; ``-cnn``,
  ``-mask7``, ``-mask14``: the same for CNN students at mask 0 and MLP students at occlusion 7 and 14 px;
  ``strategies-equal-load-mlp``, ``-cnn``, ``-mask7``, ``-mask14``: the grid and halving in brackets re-run under one load
  (``benchmarks/equal_load.py``), from ``reports/strategies/equal_load/hv_*.csv``.

The comparisons' ``summary.png`` and ``grid_scaling.png`` (``reports/headline_comparison``,
``reports/strategies``) are redrawn from their ``hv_*.csv`` and ``grid_scaling.csv`` with the same functions
``gped-search compare`` uses, so they match the committed tables (:func:`comparison_pngs`).

The image ``docs/img/quickstart_pareto.png`` is drawn from ``docs/data/quickstart_trials.csv`` and
``docs/data/quickstart.json`` (a quickstart run's trials table, its objectives, knee and teacher floor;
``--from-study REPORT_DIR`` refreshes them from a finished quickstart study).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = ROOT / "reports" / "headline_comparison"
QUICKSTART_DATA = ROOT / "docs" / "data"
QUICKSTART_PNG = ROOT / "docs" / "img" / "quickstart_pareto.png"
_BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)

# (row label, hv CSV suffix, (method, trials budget) per column, "cnn": name each cell's trials)
_MLP = (("grid", 14), ("prune", 14), ("tpe", 14), ("tpe", 42))
_HV_ROWS = (
    ("MLP, occlusion 0 px", "mlp_students__mnist__mask_0px", _MLP, ""),
    ("MLP, occlusion 7 px", "mlp_students__mnist__mask_7px", _MLP, ""),
    ("MLP, occlusion 14 px", "mlp_students__mnist__mask_14px", _MLP, ""),
    (
        "CNN, occlusion 0 px (25-point grid)",
        "cnn_students__mnist__mask_0px",
        (("grid", 25), ("prune", 8), ("tpe", 25), None),
        "cnn",
    ),
)


def _hv_at(hv: pd.DataFrame, method: str, budget: int) -> tuple[float, float, int]:
    """Mean and sd over seeds of each seed's hypervolume after ``budget`` trials; the trials it reached."""
    finals, reached = [], 0
    for _, g in hv[hv["method"] == method].groupby("seed"):
        g = g[g["trials"] <= budget].sort_values("trials")
        if len(g):
            finals.append(float(g["hypervolume"].iloc[-1]))
            reached = max(reached, int(g["trials"].iloc[-1]))
    s = pd.Series(finals)
    return float(s.mean()), float(s.std(ddof=1)) if len(s) > 1 else 0.0, reached


def headline_hypervolume() -> str:
    """Bold: a search or pruning cell above the paper's grid by more than the larger of the two sds (a
    clear win); the grid's cell when it beats every other column that way."""
    lines = [
        "| setting | paper's grid (14 trials) | group-LASSO pruning (14) | search, TPE (14) | search, TPE (42) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, suffix, cells, kind in _HV_ROWS:
        hv = pd.read_csv(HEADLINE / f"hv_{suffix}.csv")
        vals = [None if c is None else _hv_at(hv, *c) for c in cells]
        grid = vals[0]
        out = []
        for i, v in enumerate(vals):
            if v is None:
                out.append("–")
                continue
            mean, sd, reached = v
            if i == 0:
                bold = all(o is None or mean - o[0] > max(sd, o[1]) for o in vals[1:])
            else:
                bold = mean - grid[0] > max(sd, grid[1])
            text = f"**{mean:.3f}** ({sd:.3f})" if bold else f"{mean:.3f} ({sd:.3f})"
            if kind == "cnn" and i > 0:
                text += f", {reached} trials"
            out.append(text)
        lines.append(f"| {label} | " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def grid_scaling() -> str:
    """Per mask: the teacher's MC floor, the best grid KL and entropy MAE (with the student), and the
    400-400 student's figures with their gap above the best (validation, mean over seeds)."""
    g = pd.read_csv(HEADLINE / "grid_scaling.csv")
    g = g[g["setting"].str.startswith("MLP")]
    lines = [
        "| mask | teacher MC floor KL | best grid KL (student) | 400-400 KL (gap) "
        "| best grid entropy MAE (student) | 400-400 entropy MAE (gap) |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def student(r) -> str:
        size = int(float(r["size"]))
        return f"{size}-{size}" if r["depth"] == 2 else f"{size}"

    for mask, d in g.groupby("mask", sort=True):
        cells = [f"{d['floor_kl'].iloc[0]:.4f}"]
        ref = d[(d["depth"] == 2) & (d["size"].astype(float) == 400)].iloc[0]
        for col in ("kl_mean", "expected_entropy_mae_mean"):
            best = d.loc[d[col].idxmin()]
            gap = 100 * (ref[col] / best[col] - 1)
            cells += [f"{best[col]:.4f} ({student(best)})", f"{ref[col]:.4f} ({gap:+.0f} %)"]
        lines.append(f"| {int(mask)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


STRATEGIES = ROOT / "reports" / "strategies"
RECIPE_CELLS = ROOT / "reports" / "teacher_recipe" / "cells.csv"
_STRATEGY_NAMES = {  # method: (name, what its trial count counts)
    "grid": ("paper's grid", " trials"),
    "prune": ("group-LASSO pruning", ""),
    "tpe": ("search, TPE", ""),
    "qmc": ("search, Sobol QMC", ""),
    "supernet": ("supernet", " extracted"),
    "halving": ("successive halving", " asked"),
    "halving-b14": ("successive halving, brackets of 14", " asked"),
    "halving-b25": ("successive halving, brackets of 25", " asked"),
}


def teacher_recipe() -> str:
    """The README's reason for the MNIST MLP studies' teacher recipe, from reports/teacher_recipe/cells.csv."""
    cells = pd.read_csv(RECIPE_CELLS).set_index("cell")
    new, old = cells.loc["d126_l1"], cells.loc["d255_l10"]
    return (
        f"In the recipe ablation ({int(new['iterations']):,} iterations, seed 0, selected on validation) /126 with "
        f"precision 1 had the lowest validation error, {new['val_error_pct']:.2f} % against {old['val_error_pct']:.2f} % "
        f"for /255 with 10, and test error {new['test_error_pct']:.2f} % against {old['test_error_pct']:.2f} % "
        f"(test NLL {new['test_nll']:.4f} against {old['test_nll']:.4f})." + _paper_seeds(cells) + "\n"
    )


def _paper_seeds(cells: pd.DataFrame) -> str:
    """The 10^6-iteration seeds of the winning cell as one sentence: each seed and the mean ± sd."""
    runs = cells[cells.index.str.startswith("paper_d126_l1_s")]
    if runs.empty:
        return ""
    te, st = runs["test_error_pct"], runs["student_test_error_pct"]
    seeds = ", ".join(f"{v:.2f} %" for v in te)
    spread = f" (mean ± sd {te.mean():.3f} ± {te.std():.3f} %)" if len(runs) > 1 else ""
    stu = f"{st.mean():.2f} ± {st.std():.2f} %" if len(runs) > 1 else f"{st.iloc[0]:.2f} %"
    return (
        f" At {int(runs['iterations'].iloc[0]):,} iterations its teacher's test error over {len(runs)} seed"
        f"{'s' if len(runs) > 1 else ''} is {seeds}{spread}, BDK's 1.271 ± 0.013 %; the online 784-400-400 student's "
        f"is {stu}, BDK's 1.307 ± 0.017 %."
    )


def strategies_compute(
    slug: str = "mlp_students__mnist__mask_0px", folder: Path = STRATEGIES, names: dict | None = None
) -> str:
    """Issue 25's compute table for one setting (MLP or CNN students at mask 0): each method's final
    hypervolume and compute against the grid's, from ``<folder>/hv_<slug>.csv`` (``reports/strategies``)."""
    from gped_search.report.compute import compute_table

    hv = pd.read_csv(folder / f"hv_{slug}.csv")
    t = compute_table(hv)
    order = [m for m in _STRATEGY_NAMES if m in set(t["method"])]
    t = t.set_index("method").loc[order].reset_index()
    cols = [
        "final hv",
        "compute / grid's",
        "hv at 1/3 of the grid's compute",
        "seeds reaching the grid's final hv",
        "compute to reach it / grid's",
    ]
    trials = hv.groupby(["method", "study"])["trials"].max().groupby("method").max()
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for _, r in t.iterrows():
        name, what = {**_STRATEGY_NAMES, **(names or {})}[r["method"]]
        label = f"{name} ({trials[r['method']]}{what})"
        lines.append(f"| {label} | " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


EQUAL_LOAD = STRATEGIES / "equal_load"
_SLUGS = {  # block suffix: the setting's file slug in a comparison folder
    "": "mlp_students__mnist__mask_0px",
    "-cnn": "cnn_students__mnist__mask_0px",
    "-mask7": "mlp_students__mnist__mask_7px",
    "-mask14": "mlp_students__mnist__mask_14px",
}
# the equal-load CNN halving study is the first bracket of cnn_mask0_halving25 (search.n_trials=25)
_FIRST_BRACKET = {"halving": ("successive halving, the first bracket of 25", " asked")}


BLOCKS: dict[str, tuple[Path, Callable[[], str]]] = {
    "headline-hypervolume": (ROOT / "README.md", headline_hypervolume),
    "grid-scaling": (HEADLINE / "README.md", grid_scaling),
    **{
        f"strategies-compute{k}": (STRATEGIES / "README.md", partial(strategies_compute, slug))
        for k, slug in _SLUGS.items()
    },
    **{
        f"strategies-equal-load{k or '-mlp'}": (
            STRATEGIES / "README.md",
            partial(strategies_compute, slug, EQUAL_LOAD, _FIRST_BRACKET if k == "-cnn" else None),
        )
        for k, slug in _SLUGS.items()
    },
    "teacher-recipe": (ROOT / "README.md", teacher_recipe),
}


def render(text: str) -> str:
    """``text`` with every generated block replaced by what its function makes now."""

    def one(m: re.Match) -> str:
        name = m["name"]
        if name not in BLOCKS:
            raise SystemExit(f"unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        return m.group(1) + BLOCKS[name][1]() + m.group(4)

    return _BLOCK.sub(one, text)


def stale_blocks() -> list[str]:
    """The files whose generated blocks differ from what the committed data give (empty: none)."""
    files = sorted({path for path, _ in BLOCKS.values()})
    return [str(p.relative_to(ROOT)) for p in files if render(p.read_text()) != p.read_text()]


def quickstart_png(out: Path = QUICKSTART_PNG) -> Path:
    """The README's quickstart figure: KL against fp32 size, the front ringed, the knee starred, the
    teacher's Monte-Carlo floor as a line."""
    sys.path.insert(0, str(ROOT))
    from gped_search.report.plots import plot_pareto_pair

    meta = json.loads((QUICKSTART_DATA / "quickstart.json").read_text())
    df = pd.read_csv(QUICKSTART_DATA / "quickstart_trials.csv")
    fig = plot_pareto_pair(
        df,
        "kl",
        "bytes_fp32",
        meta["objectives"],
        title="Quickstart (digits): KL to the teacher vs storage",
        highlight={int(meta["knee"]): "recommended (knee)"},
        floors={"kl": meta["teacher_mc_floor_kl"]},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight", metadata={"Software": None})
    return out


COMPARISONS = (HEADLINE, ROOT / "reports" / "strategies", EQUAL_LOAD)


def _slug(setting: str) -> str:  # as gped-search compare names a setting's files
    return "".join(c if c.isalnum() else "_" for c in setting.lower()).strip("_")


def comparison_pngs(folder: Path) -> list[Path]:
    """Redraw a comparison folder's ``summary.png`` (hypervolume relative to the grid, per setting, at the
    grid's budget and each study's full budget, as ``gped-search compare`` picks them) and
    ``grid_scaling.png`` from its committed CSV files. Setting names come from ``comparison.md``."""
    sys.path.insert(0, str(ROOT))
    from gped_search.report.compare import hv_summary
    from gped_search.report.compare_plots import plot_grid_scaling, plot_summary

    names = re.findall(r"^## (.+)$", (folder / "comparison.md").read_text(), re.M)
    summaries = {}
    for name in names:
        f = folder / f"hv_{_slug(name)}.csv"
        if not f.is_file():
            continue
        curves = pd.read_csv(f)
        lengths = curves.groupby("study")["trials"].max()
        summaries[name] = hv_summary(curves, sorted(set(lengths)))
    written = []
    with_grid = {k: v for k, v in summaries.items() if (v["method"] == "grid").any()}
    if with_grid:
        plot_summary(with_grid).savefig(folder / "summary.png", dpi=110, metadata={"Software": None})
        written.append(folder / "summary.png")
    if (folder / "grid_scaling.csv").is_file():
        fig = plot_grid_scaling(pd.read_csv(folder / "grid_scaling.csv"))
        fig.savefig(folder / "grid_scaling.png", dpi=110, metadata={"Software": None})
        written.append(folder / "grid_scaling.png")
    return written


_KEEP = "number state feasible family arch lambda_g kl bytes_fp32 macs params latency_ms student_acc on_front".split()


def refresh_quickstart_data(report_dir: Path) -> None:
    """Copy a finished quickstart study's trials table (the columns the figure uses) and its knee into
    ``docs/data/``."""
    folder = report_dir / "quickstart"
    df = pd.read_csv(folder / "trials.csv")
    summary = json.loads((folder / "summary.json").read_text())
    study = {"objectives": {}, "knee": summary["recommended"]["trial"], "teacher_mc_floor_kl": None}
    import yaml

    cfg = yaml.safe_load((folder / "study.yaml").read_text())
    study["objectives"] = cfg["search"]["objectives"]
    md = (folder / "summary.md").read_text()
    m = re.search(r"Monte-Carlo floor KL ([0-9.e-]+) nats", md)
    study["teacher_mc_floor_kl"] = float(m.group(1)) if m else None
    QUICKSTART_DATA.mkdir(parents=True, exist_ok=True)
    df[[c for c in _KEEP if c in df.columns]].to_csv(QUICKSTART_DATA / "quickstart_trials.csv", index=False)
    (QUICKSTART_DATA / "quickstart.json").write_text(json.dumps(study, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a generated block is out of date")
    ap.add_argument("--from-study", type=Path, help="a report_dir with a finished quickstart study")
    args = ap.parse_args(argv)
    if args.check:
        stale = stale_blocks()
        for f in stale:
            print(f"{f}: generated blocks out of date (run python benchmarks/readme_figures.py)")
        return 1 if stale else 0
    if args.from_study:
        refresh_quickstart_data(args.from_study)
    for path in sorted({p for p, _ in BLOCKS.values()}):
        path.write_text(render(path.read_text()))
        print(f"wrote {path.relative_to(ROOT)}")
    for folder in COMPARISONS:
        for f in comparison_pngs(folder):
            print(f"wrote {f.relative_to(ROOT)}")
    print(f"wrote {quickstart_png().relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
