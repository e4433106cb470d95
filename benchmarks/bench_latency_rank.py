"""Does the latency measurement rank two students the same way twice? (issue 14, item 4)

For pairs of MNIST MLP students whose MACs differ about 4x, measure both students' latency with the
search's settings (``measure_latency``, batch 1, one torch thread, 30 blocks, 5 warm-up calls), ten
times, while ``--busy`` other CPU-bound processes run, with each clock:

* ``wall``: the old measurement (``time.perf_counter`` around each call),
* ``thread``: the default since issue 14 (the thread's CPU time over blocks of calls).

Prints JSON: per pair and clock, how often the larger student measured slower (want >= 9 of 10), the
medians, and the p90/p10 spread. Example (what the README quotes):

    OMP_NUM_THREADS=1 python benchmarks/bench_latency_rank.py --busy 1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from gped_search.metrics.cost import cost_figures, measure_latency  # noqa: E402
from gped_search.models import build, mlp_arch  # noqa: E402

PAIRS = [((100,), (400,)), ((50, 50), (200, 200)), ((60, 140), (240, 560))]


def _busy(stop) -> None:
    x = 0
    while not stop.is_set():
        for i in range(100_000):
            x += i * i


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, default=1, help="CPU-bound processes running during the measurement")
    ap.add_argument("--repetitions", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=30, help="timed samples per measurement (the search's 30)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    stop = mp.Event()
    procs = [mp.Process(target=_busy, args=(stop,), daemon=True) for _ in range(args.busy)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    rows = []
    try:
        for small_w, large_w in PAIRS:
            small, large = (
                build(mlp_arch((1, 28, 28), 10, w, (("predictive", 0), ("expected_entropy", 1)))).eval()
                for w in (small_w, large_w)
            )
            x = torch.zeros(1, 1, 28, 28)
            macs = [cost_figures(m, x)["macs_conv_linear"] for m in (small, large)]
            for clock in ("wall", "thread"):
                agree, meds, spreads = 0, [], []
                for _ in range(args.repetitions):
                    r = [
                        measure_latency(m, (1, 28, 28), threads=1, repeats=args.repeats, warmup=5, clock=clock)
                        for m in (small, large)
                    ]
                    agree += r[1]["median_ms"] > r[0]["median_ms"]
                    meds.append([round(v["median_ms"], 5) for v in r])
                    spreads.append([round(v["p90_ms"] / max(v["p10_ms"], 1e-9), 3) for v in r])
                rows.append(
                    {
                        "small": "784-" + "-".join(map(str, small_w)),
                        "large": "784-" + "-".join(map(str, large_w)),
                        "macs_ratio": round(macs[1] / macs[0], 2),
                        "clock": clock,
                        "same_order": f"{agree}/{args.repetitions}",
                        "medians_ms": meds,
                        "p90_over_p10": spreads,
                    }
                )
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=5)
    print(
        json.dumps(
            {
                "busy_processes": args.busy,
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
