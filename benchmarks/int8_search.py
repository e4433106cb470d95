"""int8 in the search (issue 29): fronts with and without int8, 3 seeds, MLP and CNN at occlusion 0 px.

Every study file in ``studies/int8/`` runs once per search seed as ``int8_<file>_s<seed>`` in
``reports/int8/search/`` (resumable, see ``suite.py``), on the headline's teachers (linked from
``reports/headline``, not re-sampled). The ``fp32`` studies search the headline's TPE space; the ``int8``
studies add ``precision: [fp32, int8]`` at the same budget. Every trial of both is timed in an ONNX
Runtime session (one thread) and sized as its serialized ONNX file, so both fronts live on one scale.

    python benchmarks/int8_search.py run [--only mlp] [--seeds 0 1 2]   # the studies
    python benchmarks/int8_search.py collect      # the studies' trials -> reports/int8/search/trials.csv
    python benchmarks/int8_search.py report       # trials.csv -> hv.csv, kl_cost.csv, latency.csv, results.md

``report`` reads only the committed ``trials.csv``: anyone can recompute every table from the repository.
Hypervolume: per setting one reference point for every study and seed (the worst value of each axis over
all their trials, plus a tenth of the range), in (validation KL, log10 ONNX bytes) and in
(validation KL, log10 ORT batch-1 latency in ms), as a fraction of the box between the best value of each axis
over all those trials and the reference point.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from suite import ROOT, Suite, parser

sys.path.insert(0, str(ROOT))

from gped_search.report.tables import hypervolume, pareto_mask  # noqa: E402

OUT = ROOT / "reports" / "int8" / "search"
SUITE = Suite(
    studies=ROOT / "studies" / "int8",
    reports=OUT,
    prefix="int8",
    order=("fp32", "int8"),
    teacher_source=ROOT / "reports" / "headline",
)
COLUMNS = (
    "setting",
    "kind",
    "seed",
    "number",
    "precision",
    "params_arch",
    "params_lambda_g",
    "params",
    "bytes_fp32",
    "bytes_onnx_fp32",
    "bytes",
    "kl",
    "fp32_kl",
    "test_kl",
    "fp32_test_kl",
    "test_student_acc",
    "fp32_test_student_acc",
    "latency_ms",
    "latency_torch_ms",
    "quant_mode",
    "quant_reduce_range",
    "quant_vnni",
    "duration_s",
)
AXES = {"bytes": "log10_bytes", "latency": "log10_latency_ms"}


def collect(args) -> int:
    df = SUITE.trials()
    if df.empty:
        print("no finished trials under reports/int8/search: run first", file=sys.stderr)
        return 1
    if "params_precision" in df:
        df["precision"] = (
            df["precision"].fillna(df["params_precision"]) if "precision" in df else df["params_precision"]
        )
    df["precision"] = df.get("precision", pd.Series("fp32", index=df.index)).fillna("fp32")
    if {"datetime_start", "datetime_complete"} <= set(df):
        df["duration_s"] = (
            pd.to_datetime(df["datetime_complete"]) - pd.to_datetime(df["datetime_start"])
        ).dt.total_seconds()
    keep = [c for c in COLUMNS if c in df]
    OUT.mkdir(parents=True, exist_ok=True)
    df[keep].sort_values(["setting", "kind", "seed", "number"]).to_csv(OUT / "trials.csv", index=False)
    print(f"{len(df)} trials -> {OUT / 'trials.csv'}")
    return 0


def _points(df: pd.DataFrame, axis: str) -> np.ndarray:
    y = np.log10((df["bytes"] if axis == "bytes" else df["latency_ms"]).astype(float))
    return np.column_stack([df["kl"].astype(float), y])


def hv_table(df: pd.DataFrame) -> pd.DataFrame:
    """Hypervolume per (setting, study kind, seed, axis), one reference point per (setting, axis)."""
    rows = []
    for setting, s in df.groupby("setting"):
        for axis in AXES:
            allp = _points(s, axis)
            lo, hi = np.nanmin(allp, 0), np.nanmax(allp, 0)
            ref = hi + 0.1 * (hi - lo)
            box = float(np.prod(ref - lo))  # hypervolume as a fraction of the box from the best values to ref
            for (kind, seed), g in s.groupby(["kind", "seed"]):
                p = _points(g, axis)
                front = g[pareto_mask(p, ["min", "min"])]
                rows.append(
                    {
                        "setting": setting,
                        "axis": axis,
                        "kind": kind,
                        "seed": seed,
                        "trials": len(g),
                        "int8_trials": int((g["precision"] == "int8").sum()),
                        "front": len(front),
                        "int8_on_front": int((front["precision"] == "int8").sum()),
                        "hypervolume": hypervolume(p, ref, ["min", "min"]) / box,
                        "ref_kl": ref[0],
                        "ref_other": ref[1],
                    }
                )
    return pd.DataFrame(rows)


def kl_cost(df: pd.DataFrame) -> pd.DataFrame:
    """What int8 costs each int8 trial: validation and test KL against the same student in fp32."""
    q = df[df["precision"] == "int8"].copy()
    q["dkl_rel"] = q["kl"] / q["fp32_kl"] - 1
    q["dtest_kl_rel"] = q["test_kl"] / q["fp32_test_kl"] - 1
    q["dtest_acc_pp"] = 100 * (q["test_student_acc"] - q["fp32_test_student_acc"])
    q["smaller"] = q["bytes_onnx_fp32"] / q["bytes"]
    q["faster_than_torch"] = q["latency_torch_ms"] / q["latency_ms"]
    bins = [0, 1e4, 1e5, 1e6, np.inf]
    labels = ["< 10 kB", "10-100 kB", "100 kB-1 MB", "> 1 MB"]
    q["size"] = pd.cut(q["bytes_onnx_fp32"], bins, labels=labels)
    g = q.groupby(["setting", "size"], observed=True)
    return g.agg(
        students=("kl", "size"),
        dkl_rel_median=("dkl_rel", "median"),
        dkl_rel_max=("dkl_rel", "max"),
        dtest_kl_rel_median=("dtest_kl_rel", "median"),
        dtest_acc_pp_median=("dtest_acc_pp", "median"),
        smaller_median=("smaller", "median"),
        faster_than_torch_median=("faster_than_torch", "median"),
    ).reset_index()


def latency_table(df: pd.DataFrame) -> pd.DataFrame:
    """Batch-1 latency per precision: eager torch (the same student in fp32) and ONNX Runtime."""
    d = df.assign(ratio=df["latency_torch_ms"] / df["latency_ms"])
    return (
        d.groupby(["setting", "precision"])
        .agg(
            trials=("kl", "size"),
            torch_ms_median=("latency_torch_ms", "median"),
            ort_ms_median=("latency_ms", "median"),
            torch_over_ort_median=("ratio", "median"),
            torch_over_ort_min=("ratio", "min"),
            torch_over_ort_max=("ratio", "max"),
        )
        .reset_index()
    )


def _fmt(v: float, nd: int = 4) -> str:
    return "–" if pd.isna(v) else f"{v:.{nd}f}"


def markdown(hv: pd.DataFrame, cost: pd.DataFrame, lat: pd.DataFrame) -> str:
    out = ["<!-- generated by `python benchmarks/int8_search.py report` from trials.csv: do not edit -->", ""]
    out += ["## Hypervolume, mean (sd) over seeds", ""]
    out += [
        "| setting | plane | fp32 only | fp32 + int8 | gain per seed (min … max) | seeds | int8 on the fronts |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (setting, axis), g in hv.groupby(["setting", "axis"]):
        cells = {}
        for kind, k in g.groupby("kind"):
            cells[kind] = f"{k['hypervolume'].mean():.4f} ({k['hypervolume'].std(ddof=1):.4f})"
        on = g[g["kind"] == "int8"]
        share = f"{on['int8_on_front'].sum()} of {on['front'].sum()}" if len(on) else "–"
        plane = "val KL × log10 ONNX bytes" if axis == "bytes" else "val KL × log10 ORT latency"
        by = g.pivot_table(index="seed", columns="kind", values="hypervolume")
        gain = (by["int8"] - by["fp32"]).dropna() if {"fp32", "int8"} <= set(by) else pd.Series(dtype=float)
        spread = f"{gain.min():+.4f} … {gain.max():+.4f}" if len(gain) else "–"
        out.append(
            f"| {setting} | {plane} | {cells.get('fp32', '–')} | {cells.get('int8', '–')} | {spread} | "
            f"{g['seed'].nunique()} | {share} |"
        )
    out += ["", "## The KL cost of int8, by fp32 ONNX size (every int8 trial of every seed)", ""]
    out += [
        "| setting | size | students | Δ val KL median | Δ val KL max | Δ test KL median | Δ test acc (pp) | smaller | faster than eager torch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in cost.itertuples():
        out.append(
            f"| {r.setting} | {r.size} | {r.students} | {100 * r.dkl_rel_median:+.2f} % | {100 * r.dkl_rel_max:+.2f} % | "
            f"{100 * r.dtest_kl_rel_median:+.2f} % | {r.dtest_acc_pp_median:+.2f} | {r.smaller_median:.2f}× | "
            f"{r.faster_than_torch_median:.2f}× |"
        )
    out += ["", "## Batch-1 latency (one thread, thread CPU time), medians over trials", ""]
    out += [
        "| setting | precision | trials | eager torch (fp32) ms | ORT ms | torch / ORT median | min | max |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in lat.itertuples():
        out.append(
            f"| {r.setting} | {r.precision} | {r.trials} | {_fmt(r.torch_ms_median)} | {_fmt(r.ort_ms_median)} | "
            f"{r.torch_over_ort_median:.2f}× | {r.torch_over_ort_min:.2f}× | {r.torch_over_ort_max:.2f}× |"
        )
    return "\n".join(out) + "\n"


def plot_fronts(df: pd.DataFrame, setting: str, path: Path) -> Path:
    """Each seed's validation front without int8 (fp32 study) and with it (int8 study), in (val KL, ONNX
    bytes) and (val KL, ORT batch-1 latency), log axes; int8 trials marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s = df[df["setting"] == setting]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    colors, styles = {"fp32": "tab:blue", "int8": "tab:red"}, {0: "-", 1: "--", 2: ":"}
    for ax, (axis, col, label) in zip(
        fig.subplots(1, 2),
        (("bytes", "bytes", "ONNX file [bytes]"), ("latency", "latency_ms", "ORT latency, batch 1 [ms]")),
    ):
        for (kind, seed), g in s.groupby(["kind", "seed"]):
            f = g[pareto_mask(_points(g, axis), ["min", "min"])].sort_values(col)
            ax.step(
                f[col],
                f["kl"],
                where="post",
                color=colors[kind],
                ls=styles.get(seed, "-"),
                lw=1.2,
                label=f"{'fp32 only' if kind == 'fp32' else 'fp32 + int8'}, seed {seed}",
            )
            q = f[f["precision"] == "int8"]
            ax.scatter(q[col], q["kl"], marker="x", color=colors[kind], s=25)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("validation KL to the teacher [nats]")
        ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(f"{setting}: validation fronts with and without int8 (x: int8 students)", fontsize=10)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    return path


def report(args) -> int:
    src = OUT / "trials.csv"
    if not src.is_file():
        print(f"{src}: not found: run `python benchmarks/int8_search.py collect` first", file=sys.stderr)
        return 1
    df = pd.read_csv(src)
    hv, cost, lat = hv_table(df), kl_cost(df), latency_table(df)
    hv.to_csv(OUT / "hv.csv", index=False)
    cost.to_csv(OUT / "kl_cost.csv", index=False)
    lat.to_csv(OUT / "latency.csv", index=False)
    (OUT / "results.md").write_text(markdown(hv, cost, lat))
    for setting in sorted(set(df["setting"])):
        print(f"wrote {plot_fronts(df, setting, OUT / f'fronts_{setting}.png').relative_to(ROOT)}")
    print((OUT / "results.md").read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], ("teachers", "run", "plan", "collect", "report")).parse_args(argv)
    if args.cmd in ("collect", "report"):
        return {"collect": collect, "report": report}[args.cmd](args)
    return getattr(SUITE, args.cmd)(args)


if __name__ == "__main__":
    sys.exit(main())
