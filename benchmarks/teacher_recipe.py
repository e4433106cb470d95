"""The teacher-recipe ablation of issue 26: BDK's MNIST recipe, one factor at a time.

    python benchmarks/teacher_recipe.py run [--only CELL ...] [--threads 1]   # resumable; re-run after a stop
    python benchmarks/teacher_recipe.py status                                 # iterations done per cell
    python benchmarks/teacher_recipe.py report                                 # table.md + cells.csv
    python benchmarks/teacher_recipe.py paper --recipe CELL [--seeds 0,1,2]    # 10^6 iterations, resumable
    python benchmarks/teacher_recipe.py paper-report                           # paper.md: mean (sd) vs BDK

Every cell is ``studies/teacher_recipe/base.yaml`` (784-400-400 teacher, 2*10^5 SGLD iterations,
50,000 training images, 10,000 validation images, online 400-400 student) plus ``--set`` overrides,
run by ``gped-search distill`` into ``reports/teacher_recipe/<cell>/`` with chain checkpoints every
20,000 iterations, so a stopped run resumes where it was. Stages, each picked on **validation**
error (ties: validation NLL) of the cells before it; the test split is only reported:

1. {pixels / 255, / 126} x {prior precision 10, 1}
2. the best cell x {default, Xavier (fan-in, magnitude 2.34) initialisation}
3. on the best cell so far: pSGLD (step size from a 10^4-iteration pilot on validation NLL over
   PSGLD_PILOT; the cell is named by the step it got), and a step-decay schedule (8e-6 halved every 5*10^4 iterations)
4. BDK's SGD baseline (sampler sgd, step 5e-6, lambda 1, / 126, Xavier): the last iterate's error
   against BDK's 1.536 %.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "studies" / "teacher_recipe" / "base.yaml"
OUT = ROOT / "reports" / "teacher_recipe"
CLI = [sys.executable, "-m", "gped_search.cli"]

STAGE1 = {
    "d255_l10": ["data.pixel_divisor=255", "teacher.prior_precision=10"],
    "d126_l10": ["data.pixel_divisor=126", "teacher.prior_precision=10"],
    "d255_l1": ["data.pixel_divisor=255", "teacher.prior_precision=1"],
    "d126_l1": ["data.pixel_divisor=126", "teacher.prior_precision=1"],
}
XAVIER = ["teacher.init=xavier_in", "teacher.init_magnitude=2.34"]
PSGLD_PILOT = (3e-9, 1e-8, 3e-8, 1e-7, 3e-7)  # 3e-8 won the first three: the grid was widened
STEP_DECAY = [
    "teacher.schedule=step",
    "teacher.step_size=8e-6",
    "teacher.decay_every=50000",
    "teacher.decay_factor=0.5",
]
SGD = ["data.pixel_divisor=126", "teacher.prior_precision=1", *XAVIER, "teacher.sampler=sgd", "teacher.step_size=5e-6"]
BDK = {"teacher_error_pct": 1.271, "teacher_sd": 0.013, "student_error_pct": 1.307, "sgd_error_pct": 1.536}


def record(cell: str) -> dict | None:
    f = OUT / f"teacher_recipe_{cell}" / "distill.json"
    return json.loads(f.read_text()) if f.is_file() else None


def run_cell(cell: str, sets: list[str], threads: int, iterations: int | None = None) -> dict:
    """Run (or resume, or skip if finished) one cell; returns its record."""
    sets = [f"name=teacher_recipe_{cell}", *sets]
    if iterations:
        sets.append(f"teacher.iterations={iterations}")
    done = record(cell)
    if done is not None and done["teacher"]["iterations"] == (iterations or done["config"]["teacher"]["iterations"]):
        return done  # finished: its record stays as it is (re-running would re-time the student)
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    folder = OUT / f"teacher_recipe_{cell}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cell.json").write_text(json.dumps({"cell": cell, "sets": sets}, indent=1))  # one file per cell
    args = [*CLI, "distill", str(BASE), "--threads", str(threads), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    print(f"[teacher_recipe] {cell}: {' '.join(sets[1:])}", flush=True)
    with open(OUT / "logs" / f"{cell}.log", "a") as log:
        rc = subprocess.run(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"cell {cell} failed (exit {rc}); see {OUT / 'logs' / (cell + '.log')}")
    return record(cell)


def _cells() -> dict:
    """Every cell started so far, in the order they were started: {cell: its --set overrides}."""
    found = []
    for f in OUT.glob("teacher_recipe_*/cell.json"):
        d = json.loads(f.read_text())
        found.append((f.stat().st_ctime, d["cell"], d["sets"]))
    return {cell: sets for _, cell, sets in sorted(found)}


def _score(rec: dict) -> tuple[float, float]:
    t = rec["teacher"]
    return (1 - t["teacher_val_acc"], t["teacher_val_nll"])


def best(cells: dict[str, list[str]]) -> tuple[str, list[str]]:
    name = min(cells, key=lambda c: _score(record(c)))
    return name, cells[name]


def run(args) -> None:
    only = set(args.only or [])

    def go(cell, sets, iterations=None):
        if only and cell not in only:
            return record(cell)
        return run_cell(cell, sets, args.threads, iterations)

    for cell, sets in STAGE1.items():
        go(cell, sets)
    if only and not all(record(c) for c in STAGE1):
        return
    b1, s1 = best(STAGE1)
    go(f"{b1}_xavier", s1 + XAVIER)
    stage2 = {b1: s1, f"{b1}_xavier": s1 + XAVIER}
    if not all(record(c) for c in stage2):
        return
    b2, s2 = best(stage2)
    pilots = {}
    for eta in PSGLD_PILOT:
        cell = f"pilot_psgld_{eta:g}"
        pilots[cell] = s2 + ["teacher.sampler=psgld", f"teacher.step_size={eta:g}"]
        go(cell, pilots[cell], iterations=10_000)
    if all(record(c) for c in pilots):
        pilot = min(pilots, key=lambda c: record(c)["teacher"]["teacher_val_nll"])
        go(f"{b2}_psgld_{pilot.rsplit('_', 1)[1]}", pilots[pilot])
    go(f"{b2}_stepdecay", s2 + STEP_DECAY)
    go("sgd_bdk", SGD)


def status(_args) -> None:
    from gped_search.posterior.chain_checkpoint import list_generations

    for cell in _cells():
        folder = OUT / f"teacher_recipe_{cell}"
        rec = record(cell)
        gens = list_generations(folder / "distill.chain") if (folder / "distill.chain").is_dir() else []
        done = rec["teacher"]["iterations"] if rec else (gens[-1][0] if gens else 0)
        print(f"{cell:28s} {'done' if rec else 'partial'} {done} iterations")


def report(_args) -> None:
    rows = []
    for cell, sets in _cells().items():
        rec = record(cell)
        if rec is None:
            continue
        t, s = rec["teacher"], rec["student"]
        rows.append(
            {
                "cell": cell,
                "settings": " ".join(x for x in sets if not x.startswith("name=")),
                "iterations": t["iterations"],
                "val_error_pct": round(100 * (1 - t["teacher_val_acc"]), 2),
                "val_nll": round(t["teacher_val_nll"], 4),
                "test_error_pct": round(100 * (1 - t["teacher_acc"]), 2),
                "test_nll": round(t["teacher_nll"], 4),
                "test_ece": round(t["teacher_ece"], 4),
                "last_iterate_test_error_pct": round(100 * (1 - t["teacher_last_acc"]), 2),
                "mc_floor_kl": round(t["teacher_mc_floor_kl"], 4),
                "student_test_error_pct": round(100 * (1 - s.get("test_student_acc", s["student_acc"])), 2),
                "student_kl": round(s["kl"], 4),
                "ms_per_iteration": round(t["ms_per_iteration"], 2),
            }
        )
    if not rows:
        raise SystemExit("no finished cell yet: run `python benchmarks/teacher_recipe.py run` first")
    with open(OUT / "cells.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cols = [k for k in rows[0] if k != "settings"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[k]) for k in cols) + " |" for r in rows]
    lines += ["", "Settings per cell:", ""] + [f"- `{r['cell']}`: {r['settings']}" for r in rows]
    lines += [
        "",
        f"BDK (Korattikara et al. 2015): teacher {BDK['teacher_error_pct']} ± {BDK['teacher_sd']} %, "
        f"student {BDK['student_error_pct']} %, SGD {BDK['sgd_error_pct']} % (10^6 iterations).",
    ]
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def paper(args) -> None:
    """The paper's setting (item 3): a recipe cell at 10^6 iterations, one run per seed, resumable."""
    sets = _cells().get(args.recipe)
    if sets is None:
        raise SystemExit(f"--recipe {args.recipe}: no such cell (run the ablation, or pick one of {list(_cells())})")
    for seed in (int(v) for v in args.seeds.split(",")):
        cell = f"paper_{args.recipe}_s{seed}"
        extra = [x for x in sets if not x.startswith("name=")]
        run_cell(cell, [*extra, f"seed={seed}", "teacher.checkpoint_every=50000"], args.threads, args.iterations)


def _kl(p, q) -> float:

    p, q = p.clamp_min(1e-12), q.clamp_min(1e-12)
    return float((p * (p.log() - q.log())).sum(1).mean())


def _trace_diagnostics(cells: list[str]) -> tuple[str, str, str]:
    """Split R-hat and ESS over the seeds' per-sample test log-likelihood traces (those recorded from the
    chain's start; chains run before the trace existed have none), cut to the shortest."""
    import pandas as pd

    from gped_search.engine.online import TRACE_FILE
    from gped_search.posterior.diagnostics import effective_sample_size, split_rhat

    rows = []
    for c in cells:
        f = OUT / f"teacher_recipe_{c}" / TRACE_FILE
        if f.is_file():
            t = pd.read_csv(f)
            if len(t) and t["sample"].min() == 0:
                rows += [g["test_loglik"].to_numpy() for _, g in t.groupby("chain")]
    if not rows:
        return "–", "–", "no traces"
    n = min(len(r) for r in rows)
    x = [r[n // 2 : n] for r in rows]  # the second half: the first is warm-up for these diagnostics (BDA3)
    what = f"{len(x)} chain{'s' if len(x) > 1 else ''} × {len(x[0])} samples, the second half of each"
    return f"{split_rhat(x):.4f}", f"{effective_sample_size(x):.0f}", what


def paper_report(_args) -> None:
    """Mean (sd) over seeds against BDK, and the between-chain KL next to the within-chain MC floor."""
    import itertools
    import statistics

    import torch

    runs = {}
    for cell in _cells():
        if cell.startswith("paper_") and record(cell):
            runs[cell] = record(cell)
    if not runs:
        raise SystemExit("no finished paper run yet: python benchmarks/teacher_recipe.py paper --recipe CELL")
    groups: dict[str, list[str]] = {}
    for cell in runs:
        groups.setdefault(cell.rsplit("_s", 1)[0], []).append(cell)
    lines = []
    for g, cells in groups.items():
        te = [100 * (1 - runs[c]["teacher"]["teacher_acc"]) for c in cells]
        # the student's test figures (``student_*`` are the selection split's when there is a validation split)
        stu = [runs[c]["student"] for c in cells]
        st = [100 * (1 - r.get("test_student_acc", r["student_acc"])) for r in stu]
        nll = [r.get("test_student_nll", r.get("student_nll")) for r in stu if "student_nll" in r]
        floor = [runs[c]["teacher"]["teacher_mc_floor_kl"] for c in cells]
        its = {runs[c]["teacher"]["iterations"] for c in cells}

        def ms(v, fmt=".3f"):
            return f"{statistics.mean(v):{fmt}}" + (f" ± {statistics.stdev(v):{fmt}}" if len(v) > 1 else "")

        preds = {c: OUT / f"teacher_recipe_{c}" / "teacher_test_predictive.pt" for c in cells}
        pairs = [
            _kl(torch.load(preds[a]), torch.load(preds[b]))
            for a, b in itertools.permutations(cells, 2)
            if preds[a].is_file() and preds[b].is_file()
        ]
        rhat, ess, traced = _trace_diagnostics(cells)
        lines += [
            f"## {g} ({len(cells)} seeds, {sorted(its)} iterations)",
            "",
            "| | ours, mean ± sd | BDK |",
            "|---|---|---|",
            f"| teacher test error % | {ms(te)} | {BDK['teacher_error_pct']} ± {BDK['teacher_sd']} |",
            f"| online student test error % | {ms(st)} | {BDK['student_error_pct']} ± 0.017 |",
            f"| online student test NLL | {ms(nll) if nll else '–'} | 0.0502 |",
            f"| within-chain MC floor KL (interleaved halves) | {ms(floor, '.2e')} | |",
            f"| between-chain KL (seed pairs, both directions) | {ms(pairs, '.2e') if pairs else '–'} | |",
            # KL between two Monte-Carlo means shrinks like 1/samples: the floor compares half-chains, so
            # twice the whole chains' KL is its like-for-like counterpart (equal if samples were independent)
            f"| between-chain KL × 2 (as if half-chains, like the floor) | {ms([2 * v for v in pairs], '.2e') if pairs else '–'} | |",
            f"| split R-hat of the per-sample test log-likelihood ({traced}) | {rhat} | |",
            f"| its effective sample size, all chains ({traced}) | {ess} | |",
            "",
        ]
    (OUT / "paper.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run or resume the ablation's cells in order")
    r.add_argument("--only", nargs="*", help="run just these cells (names as in `status`)")
    r.add_argument("--threads", type=int, default=1)
    sub.add_parser("status", help="iterations done per cell")
    sub.add_parser("report", help="write reports/teacher_recipe/table.md and cells.csv")
    pp = sub.add_parser("paper", help="a recipe cell at the paper's 10^6 iterations, one run per seed")
    pp.add_argument("--recipe", required=True, help="an ablation cell's name (see `status`)")
    pp.add_argument("--seeds", default="0,1,2")
    pp.add_argument("--iterations", type=int, default=1_000_000)
    pp.add_argument("--threads", type=int, default=1)
    sub.add_parser("paper-report", help="write reports/teacher_recipe/paper.md")
    a = ap.parse_args()
    {"run": run, "status": status, "report": report, "paper": paper, "paper-report": paper_report}[a.cmd](a)


if __name__ == "__main__":
    main()
