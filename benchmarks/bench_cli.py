"""How fast the command line answers: ``--version``, ``--help``, ``status`` (fresh processes).

    python benchmarks/bench_cli.py [--repeats 5] [--study studies/quickstart.yaml]
    python benchmarks/bench_cli.py --contention      # also: the quickstart idle vs beside one busy process

Prints one JSON object: per command the median and min wall seconds over ``--repeats`` runs, and
which heavy modules the command imported (none of torch, matplotlib, scipy, sklearn for these).
``--contention`` runs the quickstart study (default threads) on an idle machine and beside one
CPU-bound ``while True`` process and reports the ratio (target: <= 1.5).
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
    args = ap.parse_args()
    probe = subprocess.run([EXE, "status", args.study], cwd=ROOT, capture_output=True, text=True)
    if probe.returncode != 0:  # timing an error path would flatter status
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"bench_cli: `gped-search status {args.study}` fails ({last}); run that study first", file=sys.stderr)
        return 1
    out = {"cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0], "commands": {}}
    for name, cmd in {
        "--version": ["--version"],
        "--help": ["--help"],
        "status": ["status", args.study],
    }.items():
        ts = [timed([EXE, *cmd]) for _ in range(args.repeats)]
        out["commands"][name] = {
            "median_s": round(statistics.median(ts), 3),
            "min_s": round(min(ts), 3),
            "heavy_imports": heavy_modules(cmd),
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
