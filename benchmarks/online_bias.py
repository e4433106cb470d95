"""Why is the online student's expected entropy low, and which change to the online algorithm fixes it?
(issue 26, item 4). Digits, the quickstart's teacher at 2*10^4 SGLD iterations, three seeds.

    python benchmarks/online_bias.py run [--variants online,polyak ...] [--seeds 0,1,2]
    python benchmarks/online_bias.py report            # reports/online_bias/table.md + runs.csv

Each (variant, seed) is one ``gped-search distill studies/quickstart.yaml`` run with the overrides
below, into ``reports/online_bias/<variant>_s<seed>/`` (skipped when its record exists). Figures
are the student's validation expected-entropy bias (student - teacher, nats), MI bias and KL; the
teacher's validation expected entropy is printed beside them.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "online_bias"
COMMON = ["teacher.iterations=20000"]
VARIANTS = {
    "online": ["distill.target_mode=online"],  # the paper's algorithm
    "polyak": ["distill.target_mode=online", "distill.online_average=polyak"],
    "running_mean": ["distill.target_mode=running_mean"],
    "cached": ["distill.target_mode=cached"],
}


def run(args) -> None:
    for v in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            out = OUT / f"{v}_s{seed}"
            if (out / "distill.json").is_file():
                continue
            sets = [*COMMON, *VARIANTS[v], f"seed={seed}"]
            cmd = [sys.executable, "-m", "gped_search.cli", "distill", "studies/quickstart.yaml", "--out", str(out)]
            cmd += ["--threads", str(args.threads), "--no-progress"] + [a for s in sets for a in ("--set", s)]
            print(f"[online_bias] {v} seed {seed}", flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def report(_args) -> None:
    rows = []
    for f in sorted(OUT.glob("*_s*/distill.json")):
        d = json.loads(f.read_text())
        s = d["student"]
        variant, seed = f.parent.name.rsplit("_s", 1)
        rows.append(
            {
                "variant": variant,
                "seed": int(seed),
                "expected_entropy_bias": s["expected_entropy_bias"],
                "mi_bias": s.get("mi_bias"),
                "kl": s["kl"],
                "student_acc": s["student_acc"],
                "test_expected_entropy_bias": s.get("test_expected_entropy_bias"),
            }
        )
    if not rows:
        raise SystemExit("no runs yet: python benchmarks/online_bias.py run")
    with open(OUT / "runs.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [
        "| variant | seeds | val expected-entropy bias, mean (sd) | per seed | val MI bias | val KL |",
        "|---|---|---|---|---|---|",
    ]
    for v in VARIANTS:
        rs = [r for r in rows if r["variant"] == v]
        if not rs:
            continue
        b = [r["expected_entropy_bias"] for r in rs]
        sd = statistics.stdev(b) if len(b) > 1 else float("nan")
        mi = [r["mi_bias"] for r in rs if r["mi_bias"] is not None]
        lines.append(
            f"| {v} | {len(rs)} | {statistics.mean(b):+.4f} ({sd:.4f}) | {', '.join(f'{x:+.3f}' for x in b)} | "
            f"{statistics.mean(mi):+.4f} | {statistics.mean(r['kl'] for r in rs):.4f} |"
            if mi
            else f"| {v} | {len(rs)} | {statistics.mean(b):+.4f} ({sd:.4f}) | {', '.join(f'{x:+.3f}' for x in b)} | – | "
            f"{statistics.mean(r['kl'] for r in rs):.4f} |"
        )
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--variants", default=",".join(VARIANTS))
    r.add_argument("--seeds", default="0,1,2")
    r.add_argument("--threads", type=int, default=1)
    sub.add_parser("report")
    a = ap.parse_args()
    {"run": run, "report": report}[a.cmd](a)


if __name__ == "__main__":
    main()
