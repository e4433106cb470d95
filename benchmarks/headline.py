"""Run the headline comparison (issue 16): the paper's grid vs group-LASSO pruning vs the search.

Every study file in ``studies/headline/`` is run once per search seed, as the Optuna study
``<name>_s<seed>`` in ``reports/headline/`` (one SQLite file per study). Re-running resumes: a
study that already has its trials is skipped, a teacher chain that was stopped resumes from its
checkpoint, and every study of one setting reuses that setting's teacher artifact.

    python benchmarks/headline.py teachers [--only mlp_mask0]     # sample the shared teachers only
    python benchmarks/headline.py run [--only mlp_mask0] [--seeds 0 1 2]
    python benchmarks/headline.py plan                            # what would run, and what is done
    gped-search compare reports/headline --out reports/headline_comparison

Each study runs in its own ``gped-search run`` process with one torch thread (``--threads``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "studies" / "headline"
SEEDS = (0, 1, 2)
# The NSGA-II study of mask 0 and the CNN's 3x-budget runs are costly on two cores: they run after
# everything else (``--only`` picks them like any other).
ORDER = ("grid", "prune", "tpe", "nsga2")


def study_files(only: list[str] | None) -> list[Path]:
    files = sorted(
        STUDIES.glob("*.yaml"),
        key=lambda f: (
            f.stem.rsplit("_", 1)[0].startswith("cnn"),
            f.stem.rsplit("_", 1)[0],
            ORDER.index(f.stem.rsplit("_", 1)[1]),
        ),
    )
    if only:
        files = [f for f in files if any(f.stem.startswith(o) for o in only)]
    return files


def _done(name: str, want: int) -> int:
    db = ROOT / "reports" / "headline" / name / "study.db"
    if not db.is_file():
        return 0
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        s = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    except KeyError:
        return 0
    return sum(t.state.name == "COMPLETE" for t in s.get_trials(deepcopy=False))


def cmd_teachers(args) -> int:
    import torch

    from gped_search.config import load_study
    from gped_search.engine import prepare
    from gped_search.search.study import ensure_teacher

    torch.set_num_threads(args.threads)
    seen = set()
    for f in study_files(args.only):
        setting = f.stem.rsplit("_", 1)[0]
        if setting in seen:
            continue
        seen.add(setting)
        cfg = load_study(f, [f"name={cfg_name(f, 0)}"])
        t0 = time.time()
        teacher, info = ensure_teacher(prepare(cfg), cfg.out_dir.resolve(), progress=not args.no_progress)
        print(
            f"{setting}: teacher {info['teacher_iterations']} iterations, test acc "
            f"{teacher.metrics.get('teacher_acc', float('nan')):.4f}, "
            f"{time.time() - t0:.0f} s here ({'sampled' if info['teacher_sampled_here'] else 'loaded'})",
            flush=True,
        )
    return 0


def _setting_rank(f: Path, only: list[str] | None) -> tuple:
    setting, method = f.stem.rsplit("_", 1)
    first = next((i for i, o in enumerate(only or []) if f.stem.startswith(o)), 0)
    return (first, setting, method == "nsga2")


def cfg_name(f: Path, seed: int) -> str:
    return f"headline_{f.stem}_s{seed}"


def _want(f: Path) -> int:
    from gped_search.config import load_study

    return load_study(f).search.n_trials


def cmd_run(args) -> int:
    exe = Path(sys.executable).with_name("gped-search")
    rc = 0
    # setting by setting; within a setting seed by seed, so that a stopped run has whole seeds
    plan = [(f, seed) for f in study_files(args.only) for seed in args.seeds]
    plan.sort(key=lambda fs: (_setting_rank(fs[0], args.only), fs[1]))
    for f, seed in plan:
        want = _want(f)
        name = cfg_name(f, seed)
        if _done(name, want) >= want:
            print(f"{name}: done ({want} trials)", flush=True)
            continue
        cmd = [
            str(exe),
            "run",
            str(f),
            "--set",
            f"name={name}",
            "--set",
            f"search.seed={seed}",
            "--threads",
            str(args.threads),
            "--no-report",
            "--no-progress",
        ]
        print(f"{time.strftime('%H:%M:%S')} {name}: " + " ".join(cmd[1:]), flush=True)
        t0 = time.time()
        r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        print(
            f"{time.strftime('%H:%M:%S')} {name}: exit {r.returncode} after {time.time() - t0:.0f} s",
            flush=True,
        )
        rc = rc or r.returncode
    return rc


def cmd_plan(args) -> int:
    for f in study_files(args.only):
        want = _want(f)
        for seed in args.seeds:
            name = cfg_name(f, seed)
            print(f"{name:40s} {_done(name, want):3d}/{want}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("teachers", "run", "plan"):
        sp = sub.add_parser(name)
        sp.add_argument("--only", nargs="*", help="study-file name prefixes, e.g. mlp_mask0 cnn")
        sp.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
        sp.add_argument("--threads", type=int, default=1)
        sp.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    return {"teachers": cmd_teachers, "run": cmd_run, "plan": cmd_plan}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
