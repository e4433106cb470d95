"""Pruning against its peers (issue 20): group LASSO vs Torch-Pruning's criteria and regularisers.

The teacher-sized students (400-400 MLP on MNIST at masks 0 and 14, the m = 1 CNN at mask 0) are
pruned to 25 / 50 / 75 % of their parameters by every method of ``prune.method`` with the same
200 fine-tuning steps (``studies/prune_peers/``: one-shot magnitude and Taylor in 1 or 3 rounds,
group LASSO at four strengths, GroupNormPruner / GrowingRegPruner regularisers at four strengths),
and compared with plain students of the same final widths trained from scratch for the same total
steps (1,000 + 200). Three search seeds (student initialisations and minibatch streams); each
setting's teacher (MLP: 3*10^4 SGLD iterations, CNN: 5*10^3) is sampled once and shared by its studies.

    python benchmarks/prune_peers.py teachers                                # the three teachers
    python benchmarks/prune_peers.py run [--only mlp_mask0] [--seeds 0 1 2]   # the studies
    python benchmarks/prune_peers.py scratch                                 # the from-scratch students
    python benchmarks/prune_peers.py report                                  # figure, tables, CSVs
    python benchmarks/prune_peers.py plan

A regularised method's strength (lambda_g, reg) is chosen per setting, budget and seed by validation
KL; every number in the tables is then the test split's. Output: ``reports/prune_peers_comparison/``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from suite import ROOT, Suite, parser

REPORTS = ROOT / "reports" / "prune_peers"
OUT = ROOT / "reports" / "prune_peers_comparison"
SCRATCH = REPORTS / "scratch.jsonl"
BUDGETS = (0.25, 0.5, 0.75)
SETTINGS = ("mlp_mask0", "mlp_mask14", "cnn_mask0")
METRICS = (
    "kl",
    "test_kl",
    "test_expected_entropy_mae",
    "test_expected_entropy_bias",
    "test_student_acc",
    "params",
    "macs",
    "latency_ms",
)


SUITE = Suite(
    studies=ROOT / "studies" / "prune_peers",
    reports=REPORTS,
    prefix="peers",
    order=("oneshot", "group_lasso", "regularised", "group_lasso_weak", "regularised_weak", "group_lasso_strong"),
)


def _frames():
    """Every peer trial, with ``budget``, ``rounds`` and ``reg`` from its parameters."""
    df = SUITE.trials()
    for k, default in (("budget", float("nan")), ("rounds", 1), ("reg", float("nan"))):
        df[k] = df[f"param_{k}"] if f"param_{k}" in df.columns else default
    return df


def _label(row) -> str:
    m = row["prune_method"]
    rounds = int(row["rounds"]) if row.get("rounds") == row.get("rounds") else 1
    return f"{m} x{rounds}" if rounds > 1 else m


def cmd_scratch(args) -> int:
    """Plain students of each budget's pruned widths, trained from scratch for 1,000 + 200 steps."""
    import torch

    from gped_search.config import load_study
    from gped_search.distill.loop import train_student
    from gped_search.engine import make_trainer, prepare, student_arch_for, student_record
    from gped_search.models import build
    from gped_search.search.teacher import ensure_teacher
    from gped_search.seeds import trial_seed

    torch.set_num_threads(args.threads)
    done = set()
    if SCRATCH.is_file():
        done = {(r["setting"], r["seed"], r["budget"]) for r in map(json.loads, SCRATCH.read_text().splitlines())}
    trials = _frames()
    for setting in SETTINGS:
        if args.only and not any(setting.startswith(o) for o in args.only):
            continue
        f = SUITE.studies / f"{setting}_oneshot.yaml"
        for seed in args.seeds:
            cfg = load_study(f, [f"name={SUITE.name(f, seed)}", f"search.seed={seed}"])
            p = teacher = None
            for k, budget in enumerate(BUDGETS):
                if (setting, seed, budget) in done:
                    continue
                sel = trials[(trials["setting"] == setting) & (trials["seed"] == seed) & (trials["budget"] == budget)]
                if sel.empty:
                    print(f"{setting} s{seed} budget {budget}: no pruned trial yet (run first)", flush=True)
                    continue
                if p is None:
                    p = prepare(cfg)
                    teacher, _ = ensure_teacher(p, cfg.out_dir.resolve(), progress=False)
                row = sel.iloc[0]
                arch = student_arch_for(p, cfg.student)
                hidden = tuple(int(row[c]) for c in sorted(sel.columns) if c.startswith("hidden_") and row[c] == row[c])
                channels = tuple(
                    int(row[c]) for c in sorted(sel.columns) if c.startswith("channels_") and row[c] == row[c]
                )
                arch = replace(arch, hidden=hidden, channels=channels)
                t0 = time.perf_counter()
                torch.manual_seed(trial_seed(seed, 1000 + k))
                model = build(arch).to(p.device)
                steps = cfg.distill.steps + cfg.prune.finetune_steps
                train_student(
                    make_trainer(model, p, cfg.distill),
                    teacher,
                    p.bundle.transfer,
                    steps,
                    cfg.distill,
                    cfg.data,
                    seed=trial_seed(seed, 1000 + k),
                )
                rec = student_record(model, teacher, p)
                rec = {k2: v for k2, v in rec.items() if isinstance(v, (int, float, str))}
                rec.update(setting=setting, seed=seed, budget=budget, prune_method="scratch", student_steps=steps)
                rec["train_seconds"] = time.perf_counter() - t0
                SCRATCH.parent.mkdir(parents=True, exist_ok=True)
                with SCRATCH.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                print(f"{setting} s{seed} budget {budget}: {rec['arch']} test KL {rec['test_kl']:.4f}", flush=True)
    return 0


def _table(trials):
    """Per setting, budget and method: mean and sd over seeds (tuned strengths picked on validation KL)."""

    df = trials.copy()
    df["method"] = df.apply(_label, axis=1)
    df["strength"] = df.apply(
        lambda r: r["lambda_g"] if r["prune_method"] == "group_lasso" else r.get("reg", float("nan")), axis=1
    )
    best = df.sort_values("kl").groupby(["setting", "budget", "method", "seed"], as_index=False).first()
    agg = best.groupby(["setting", "budget", "method"])[list(METRICS) + ["params_kept_fraction"]].agg(["mean", "std"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg["seeds"] = best.groupby(["setting", "budget", "method"])["seed"].nunique()
    agg["strengths"] = best.groupby(["setting", "budget", "method"])["strength"].apply(
        lambda s: ", ".join(f"{v:g}" for v in s if v == v)
    )
    return best, agg.reset_index()


def cmd_report(args) -> int:
    import pandas as pd

    trials = _frames()
    if trials.empty:
        print("no trials yet: run first", file=sys.stderr)
        return 1
    if SCRATCH.is_file():
        scratch = pd.DataFrame([json.loads(x) for x in SCRATCH.read_text().splitlines()])
        trials = pd.concat([trials, scratch], ignore_index=True)
    # the fraction each pruned student reached (recorded per trial); a scratch student has the same widths
    reached = trials.groupby(["setting", "budget"])["params_kept_fraction"].transform("max")
    trials["params_kept_fraction"] = trials["params_kept_fraction"].fillna(reached)
    OUT.mkdir(parents=True, exist_ok=True)
    best, agg = _table(trials)
    keep = ["setting", "seed", "budget", "method", "strength", "arch", *METRICS]
    best[[c for c in keep if c in best.columns]].to_csv(OUT / "students.csv", index=False)
    agg.to_csv(OUT / "summary.csv", index=False)
    _figure(agg, OUT / "prune_peers.png")
    (OUT / "comparison.md").write_text(_markdown(agg))
    print(f"wrote {OUT}/comparison.md, summary.csv, students.csv, prune_peers.png")
    return 0


def _fmt(m, s, spec):
    return f"{m:{spec}} ({s:{spec}})" if s == s else f"{m:{spec}}"


def _markdown(agg) -> str:
    lines = []
    for setting in SETTINGS:
        sub = agg[agg["setting"] == setting]
        if sub.empty:
            continue
        lines += [
            f"### {setting.replace('_', ', ')}",
            "",
            "| budget | method | params (kept) | val KL | test KL | entropy MAE | entropy bias | test acc [%] | MACs "
            "| latency [ms] | strength (by val KL) | seeds |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for budget in BUDGETS:
            rows = sub[sub["budget"] == budget].sort_values("test_kl_mean")
            for i, r in enumerate(rows.itertuples()):
                star = "**" if i == 0 else ""
                lines.append(
                    f"| {budget:.0%} | {star}{r.method}{star} | {r.params_mean:,.0f} ({r.params_kept_fraction_mean:.2%}) | "
                    f"{_fmt(r.kl_mean, r.kl_std, '.4f')} | {star}{_fmt(r.test_kl_mean, r.test_kl_std, '.4f')}{star} | "
                    f"{_fmt(r.test_expected_entropy_mae_mean, r.test_expected_entropy_mae_std, '.4f')} | "
                    f"{_fmt(r.test_expected_entropy_bias_mean, r.test_expected_entropy_bias_std, '+.4f')} | "
                    f"{100 * r.test_student_acc_mean:.2f} | {r.macs_mean:,.0f} | {r.latency_ms_mean:.3f} | "
                    f"{r.strengths} | {r.seeds} |"
                )
        lines.append("")
    lines.append(
        "Mean (sd) over seeds. A tuned method's strength is picked per seed by validation KL; every other "
        "column is the test split's (10,000 images). Params (kept): the pruned student's parameters and "
        "their fraction of the teacher-sized student's. Bold: the lowest test KL at that budget. "
        "Entropy MAE / bias: mean absolute error / mean signed error of the student's expected-entropy head "
        "[nats]. Latency: batch 1, one CPU thread, median."
    )
    return "\n".join(lines) + "\n"


COLORS = {
    "group_lasso": "tab:blue",
    "magnitude": "tab:red",
    "taylor": "tab:brown",
    "group_norm": "tab:orange",
    "growing_reg": "tab:green",
    "scratch": "black",
}


def _figure(agg, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [s for s in SETTINGS if (agg["setting"] == s).any()]
    fig, axes = plt.subplots(2, len(settings), figsize=(5 * len(settings), 8), squeeze=False)
    methods = sorted(agg["method"].unique(), key=lambda m: (m == "scratch", m))
    for j, setting in enumerate(settings):
        sub = agg[agg["setting"] == setting]
        for row, (metric, label) in enumerate(
            (
                ("test_kl", "test KL(teacher || student) [nats]"),
                ("test_expected_entropy_mae", "test expected-entropy MAE [nats]"),
            )
        ):
            ax = axes[row, j]
            for k, m in enumerate(methods):
                d = sub[sub["method"] == m].sort_values("budget")
                x = d["budget"] * 100 + (k - len(methods) / 2) * 0.8
                ax.errorbar(
                    x,
                    d[f"{metric}_mean"],
                    yerr=d[f"{metric}_std"].fillna(0),
                    marker="o" if m != "scratch" else "s",
                    ls="--" if m == "scratch" else (":" if " x" in m else "-"),
                    color=COLORS.get(m.split(" x")[0]),
                    capsize=3,
                    label=m,
                )
            ax.set_yscale("log")
            ax.set_xticks([b * 100 for b in BUDGETS])
            ax.set_xlabel("parameters kept [% of the teacher-sized student]")
            ax.set_ylabel(label)
            if row == 0:
                ax.set_title(setting.replace("_", ", "))
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(
        "Pruning methods at equal parameter budgets and fine-tuning (mean, sd over seeds; "
        "dotted: 3 prune -> fine-tune rounds; dashed: trained from scratch)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], ("teachers", "run", "plan", "scratch", "report")).parse_args(argv)
    if args.cmd == "scratch":
        return cmd_scratch(args)
    if args.cmd == "report":
        return cmd_report(args)
    return getattr(SUITE, args.cmd)(args)


if __name__ == "__main__":
    sys.exit(main())
