"""How fast the command line answers: ``--version``, ``--help``, ``status``, the error paths, ``report`` and
``export --knee`` (fresh processes).

    python benchmarks/bench_cli.py [--repeats 5] [--study studies/quickstart.yaml] [--set KEY=VALUE ...]
    python benchmarks/bench_cli.py --contention      # also: the quickstart idle vs beside one busy process

Prints one JSON object: per command the median and min wall seconds over ``--repeats`` runs, its target
(issue 28: every error < 1 s, ``status`` < 1 s, ``report`` and ``export --knee`` (pt2) < 3 s on the
quickstart on an idle 2-core machine; ``export --knee`` both as ``run`` leaves it, a copy of the export it kept
(:mod:`gped_search.search.export_cache`), and ``--fresh``; ``report`` both into a new folder, where every figure is drawn, and
again over an unchanged study, where :mod:`gped_search.report.figure_cache` reads them back) and whether
the median met it, the floor under any ``export`` (importing ``torch`` and ``torch.export``), and which heavy modules the
quick commands imported (none of torch, matplotlib, scipy, sklearn for ``--version``/``--help``/``status``;
the error paths must not import torch). ``--set`` is passed to every study command (e.g. a scratch
``report_dir``). ``--contention`` runs the quickstart study (default threads) on an idle machine and
beside one CPU-bound ``while True`` process and reports the ratio (target: <= 1.5).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXE = str(Path(sys.executable).with_name("gped-search"))


def timed(cmd: list[str], env=None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False, env=env)
    return time.perf_counter() - t0


def heavy_modules(args: list[str]) -> list[str]:
    code = (
        "import sys\nfrom gped_search.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'matplotlib', 'scipy', 'sklearn', 'pandas') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1].replace("'", '"')) if r.stdout.strip() else ["?"]


def quickstart(report_dir: str, busy: bool) -> float:
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        return timed(
            [
                EXE,
                "run",
                "studies/quickstart.yaml",
                "--no-progress",
                "--no-report",
                "--json",
                "--set",
                f"report_dir={report_dir}",
            ]
        )
    finally:
        if hog:
            hog.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--study", default="studies/quickstart.yaml")
    ap.add_argument("--contention", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    sets = [a for o in args.overrides for a in ("--set", o)]
    probe = subprocess.run([EXE, "status", args.study, *sets], cwd=ROOT, capture_output=True, text=True)
    if probe.returncode != 0:  # timing an error path would flatter status
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"bench_cli: `gped-search status {args.study}` fails ({last}); run that study first", file=sys.stderr)
        return 1
    out = {"cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0], "commands": {}}
    scratch = tempfile.mkdtemp(prefix="bench_cli-")
    study = [args.study, *sets]
    quick = {  # name -> (argv, target seconds, expected exit status)
        "--version": (["--version"], 1.0, 0),
        "--help": (["--help"], 1.0, 0),
        "status": (["status", *study], 1.0, 0),
        "error: status of a missing study file": (["status", "studies/no_such_study.yaml"], 1.0, 2),
        "error: export --trial 99": (["export", *study, "--trial", "99", "--out", scratch + "/x"], 1.0, 2),
        "error: export --format tflite": (
            ["export", *study, "--trial", "0", "--format", "tflite", "--out", scratch + "/x"],
            1.0,
            2,
        ),
        "error: export --require nonsense": (
            ["export", *study, "--require", "acc=>1", "--out", scratch + "/x"],
            1.0,
            2,
        ),
        "error: pareto --objectives test_kl": (["pareto", *study, "--objectives", "test_kl"], 1.0, 2),
        "error: evaluate a missing file": (["evaluate", scratch + "/missing.pt"], 1.0, 2),
    }
    slow = {  # "{i}": a new folder for every repeat (nothing to reuse); else the same one, written once before
        "report into a new folder": (["report", *study, "--out", scratch + "/report{i}"], 3.0, 0),
        "report again (study unchanged)": (["report", *study, "--out", scratch + "/report"], 3.0, 0),
        "export --knee (pt2), kept by run": (["export", *study, "--knee", "--out", scratch + "/knee"], 3.0, 0),
        "export --knee --fresh (pt2 traced again)": (
            ["export", *study, "--knee", "--fresh", "--out", scratch + "/knee_fresh"],
            3.0,
            0,
        ),
    }
    for name, (cmd, target, rc) in {**quick, **slow}.items():
        got = subprocess.run(
            [EXE, *(c.format(i="") for c in cmd)], cwd=ROOT, capture_output=True, text=True, check=False
        ).returncode
        if got != rc:
            print(f"bench_cli: `gped-search {' '.join(cmd)}` exited {got}, not {rc}", file=sys.stderr)
            return 1
        ts = [timed([EXE, *(c.format(i=k) for c in cmd)]) for k in range(args.repeats)]
        med = statistics.median(ts)
        out["commands"][name] = {
            "median_s": round(med, 3),
            "min_s": round(min(ts), 3),
            "target_s": target,
            "meets_target": med < target,
            **({"heavy_imports": heavy_modules(cmd)} if name in quick else {}),
        }
    floor = [timed([sys.executable, "-c", "import torch, torch.export"]) for _ in range(args.repeats)]
    out["floor: import torch, torch.export"] = {
        "median_s": round(statistics.median(floor), 3),
        "min_s": round(min(floor), 3),
    }
    if args.contention:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            idle, busy = quickstart(a, False), quickstart(b, True)
        out["quickstart"] = {
            "idle_s": round(idle, 1),
            "beside_one_busy_process_s": round(busy, 1),
            "ratio": round(busy / idle, 2),
        }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
