"""Search throughput: one study end to end in a temporary folder; prints JSON.

Time in the teacher (sampled once) vs in trials, trials per hour, seconds per trial, and what
re-sampling the teacher in every trial would have cost. Default: the quickstart study on digits.

    python benchmarks/bench_search.py [STUDY] [--n-trials 8] [--workers 1] [--batch K] [--set key=value ...]

``--batch K`` runs the study in ask-and-tell batch mode (K students trained in lockstep per batch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch

from gped_search.config import load_study
from gped_search.search import run_study, teacher_seconds_saved, trials_frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", nargs="?", default="studies/quickstart.yaml")
    ap.add_argument("--n-trials", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=None, help="trials per lockstep batch (default: the study's)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        batch = [f"search.batch={args.batch}"] if args.batch else []
        cfg = load_study(args.study, [*args.overrides, *batch, f"report_dir={tmp}"])
        t0 = time.perf_counter()
        study = run_study(cfg, n_trials=args.n_trials, workers=args.workers, progress=False)
        wall = time.perf_counter() - t0
        df = trials_frame(study)
        saved = teacher_seconds_saved(study)
    done = df[df["state"] == "COMPLETE"]
    objectives = list(cfg.search.objectives)
    cols = [
        "number",
        *objectives,
        *[c for c in ("arch", "lambda_g", "student_acc") if c in df and c not in objectives],
    ]
    front = df[df["on_front"]].sort_values(objectives[0])[cols] if "on_front" in df else df.iloc[:0]
    trial_wall = wall - saved["teacher_seconds"]
    print(
        json.dumps(
            {
                "study": cfg.name,
                "device": cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
                "cpu": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "workers": args.workers,
                "batch": cfg.search.batch,
                "teacher_iterations": cfg.teacher.iterations,
                "student_steps": cfg.distill.steps,
                "wall_seconds": round(wall, 2),
                "teacher_seconds": round(saved["teacher_seconds"], 2),
                "trials_complete": len(done),
                "trials_failed": int((df["state"] == "FAIL").sum()),
                "seconds_per_trial_median": round(float(done["duration_s"].median()), 2) if len(done) else None,
                "trial_seconds_total": round(trial_wall, 2),
                "train_seconds_median": round(float(done["train_seconds"].median()), 2) if len(done) else None,
                "trials_per_hour_after_teacher": round(3600 * len(done) / max(trial_wall, 1e-9), 1),
                "teacher_share_of_wall": round(saved["teacher_seconds"] / wall, 3),
                "resampling_teacher_per_trial_would_add_seconds": round(saved["saved_seconds"], 1),
                "front_size": int(df["on_front"].sum()) if "on_front" in df else 0,
                "front": json.loads(front.to_json(orient="records")),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
