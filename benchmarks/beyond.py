"""Beyond the paper (issue 19): derivative matching, relational distillation, adversarial robustness.

Studies (``studies/beyond/``, three search seeds each, resumable; the MNIST mask-0 teacher of the
headline comparison is linked in, not re-sampled):

* ``derivative_n{100,1000,10000}``: a 100-100 MLP student distilled from the first 100 / 1,000 /
  10,000 transfer images, derivative_weight 0 (values only) or 3 / 10 / 30 / 100 / 1,000 / 10,000
  (``derivative_n*low``: the three weakest);
* ``relational_mlp``: 20-20 and 50-50 MLP students, relational_weight 0 / 1 / 10 / 100
  (``relational_mlplow``: 0.1 / 0.3).

Robustness: ``gped-search robustness`` on the headline grid studies of MNIST mask 0 (one per seed):
the teacher (PGD through its posterior predictive over 16 bank samples), three front students and a
deterministic baseline of the teacher's size, FGSM and PGD-10 at eps 0.05 / 0.1 / 0.2, 1,000 test images.

    python benchmarks/beyond.py run [--seeds 0 1 2]     # the studies
    python benchmarks/beyond.py robustness              # the attacks (3 seeds)
    python benchmarks/beyond.py report                  # tables, figures -> reports/beyond_results/
    python benchmarks/beyond.py plan

A weight > 0 is picked per seed by validation KL; every reported number is the test split's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from suite import ROOT, SEEDS, Suite, parser

from gped_search.report.writer import markdown_table

REPORTS = ROOT / "reports" / "beyond"
OUT = ROOT / "reports" / "beyond_results"
SUITE = Suite(
    studies=ROOT / "studies" / "beyond",
    reports=REPORTS,
    prefix="beyond",
    order=("n100", "n1000", "n10000", "mlp", "n100low", "n1000low", "n10000low", "mlplow"),
    teacher_source=ROOT / "reports" / "headline",
)
ROBUST_STUDY = ROOT / "studies" / "headline" / "mlp_mask0_grid.yaml"


def cmd_robustness(args) -> int:
    exe = Path(sys.executable).with_name("gped-search")
    rc = 0
    for seed in args.seeds:
        out = REPORTS / f"robustness_s{seed}"
        if (out / "robustness.csv").is_file():
            print(f"robustness s{seed}: done", flush=True)
            continue
        cmd = [str(exe), "robustness", str(ROBUST_STUDY), "--set", f"name=headline_mlp_mask0_grid_s{seed}"]
        cmd += ["--set", f"search.seed={seed}", "--n", "1000", "--out", str(out)]
        print(f"{time.strftime('%H:%M:%S')} robustness s{seed}: " + " ".join(cmd[1:]), flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        rc = rc or subprocess.run(cmd, cwd=ROOT, env=env).returncode
    return rc


def _ms(s) -> str:
    return f"{s.mean():.4f} ({s.std():.4f})" if len(s) > 1 else f"{s.mean():.4f}"


def _pct(s) -> str:
    return f"{100 * s.mean():.2f} ({100 * s.std():.2f})" if len(s) > 1 else f"{100 * s.mean():.2f}"


def _compare(df, weight: str, group: str, metrics: list[tuple[str, str, callable]]) -> tuple[str, object]:
    """Per ``group`` value: the off row (weight 0), each weight, and the weight picked per seed by val KL."""
    import pandas as pd

    rows = []
    for g, sub in df.groupby(group, sort=True):
        off = sub[sub[weight] == 0]
        on = sub[sub[weight] > 0]
        picked = on.sort_values("kl").groupby("seed", as_index=False).first()
        parts = [("off (0)", off)] + [(f"{w:g}", on[on[weight] == w]) for w in sorted(on[weight].unique())]
        parts.append(("picked by val KL", picked))
        for label, d in parts:
            row = {group: g, weight: label, "seeds": d["seed"].nunique()}
            for col, name, fmt in metrics:
                row[name] = fmt(d[col]) if col in d else "n/a"
            if label == "picked by val KL":
                row[weight] = f"picked: {', '.join(f'{w:g}' for w in d[weight])}"
            rows.append(row)
    table = pd.DataFrame(rows)
    return markdown_table(table), table


def _derivative_figure(df, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for w in sorted(df["derivative_weight"].unique()):
        d = df[df["derivative_weight"] == w].groupby("transfer_size")
        for ax, col, scale in ((axes[0], "test_kl", 1.0), (axes[1], "test_student_acc", 100.0)):
            m, s = d[col].mean() * scale, d[col].std() * scale
            ax.errorbar(m.index, m, yerr=s.fillna(0), marker="o", capsize=3, label=f"derivative_weight {w:g}")
    axes[0].set(xscale="log", yscale="log", xlabel="transfer images", ylabel="test KL(teacher || student) [nats]")
    axes[1].set(xscale="log", xlabel="transfer images", ylabel="test accuracy [%]")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Derivative matching, 100-100 MLP student, MNIST (mean, sd over 3 seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_report(args) -> int:
    import pandas as pd

    OUT.mkdir(parents=True, exist_ok=True)
    df = SUITE.trials()
    parts = ["# Beyond the paper: measured results", "", "Generated by `python benchmarks/beyond.py report`.", ""]
    metrics = [
        ("kl", "val KL", _ms),
        ("test_kl", "test KL", _ms),
        ("test_student_acc", "test acc [%]", _pct),
        ("test_expected_entropy_mae", "test entropy MAE", _ms),
        ("test_ood_auroc", "test OOD AUROC", _ms),
    ]
    if not df.empty:
        der = df[df["setting"] == "derivative"].copy()
        if not der.empty:
            der["transfer_size"] = der["kind"].str.extract(r"(\d+)")[0].astype(int)
            der["derivative_weight"] = der["param_derivative_weight"].astype(float)
            md, table = _compare(der, "derivative_weight", "transfer_size", metrics)
            table.to_csv(OUT / "derivative.csv", index=False)
            _derivative_figure(der, OUT / "derivative.png")
            parts += ["## Derivative matching (100-100 MLP, MNIST mask 0)", "", md, "", "![](derivative.png)", ""]
        rel = df[df["setting"] == "relational"].copy()
        if not rel.empty:
            rel["relational_weight"] = rel["param_relational_weight"].astype(float)
            rel["student"] = rel["arch"]
            md, table = _compare(rel, "relational_weight", "student", metrics)
            table.to_csv(OUT / "relational.csv", index=False)
            parts += ["## Relational distillation (small MLP students, MNIST mask 0)", "", md, ""]
        df.to_csv(OUT / "trials.csv", index=False)
    rob = [
        pd.read_csv(REPORTS / f"robustness_s{s}" / "robustness.csv").assign(seed=s)
        for s in SEEDS
        if (REPORTS / f"robustness_s{s}" / "robustness.csv").is_file()
    ]
    if rob:
        r = pd.concat(rob, ignore_index=True)
        r["kind"] = r["model"].str.replace(r"#\d+ ", "", regex=True)  # a student by its architecture
        r.to_csv(OUT / "robustness.csv", index=False)
        g = r.groupby(["kind", "attack", "eps"])
        table = pd.DataFrame(
            {
                "accuracy [%]": g["accuracy"].apply(_pct),
                "entropy [nats]": g["entropy"].apply(_ms),
                "MI [nats]": g["mi"].apply(lambda s: _ms(s) if s.notna().any() else "n/a"),
                "models x seeds": g.size(),
            }
        ).reset_index()
        table.to_csv(OUT / "robustness_summary.csv", index=False)
        parts += ["## Adversarial robustness (MNIST mask 0, 1,000 test images)", "", markdown_table(table), ""]
        import shutil

        shutil.copy(REPORTS / f"robustness_s{rob[0]['seed'].iloc[0]}" / "robustness.png", OUT / "robustness.png")
        parts += ["![](robustness.png)", ""]
    (OUT / "results.md").write_text("\n".join(parts))
    print(f"wrote {OUT}/results.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], ("run", "plan", "robustness", "report")).parse_args(argv)
    if args.cmd == "robustness":
        return cmd_robustness(args)
    if args.cmd == "report":
        return cmd_report(args)
    return getattr(SUITE, args.cmd)(args)


if __name__ == "__main__":
    sys.exit(main())
