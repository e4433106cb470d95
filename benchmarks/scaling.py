"""Scaling table of the teacher loop: chains 1 -> 64, teacher width, teacher batch; prints JSON.

Runs :mod:`bench_distill` once per row (same process, same data) and keeps, per row, ms per
iteration, ms per chain-iteration, posterior samples/s, GFLOP per iteration, achieved TFLOP/s and
its fraction of a measured fp32 matmul (and of the nominal peak on known GPUs). ``--markdown``
also prints the table as Markdown (the one in ``benchmarks/README.md``).

    python benchmarks/scaling.py --threads 1 --markdown              # CPU, ~10 min on 2 cores
    python benchmarks/scaling.py --device cuda --iterations 20000 --cuda-graph --markdown
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_distill  # noqa: E402


def rows(args) -> list[tuple[str, list[str]]]:
    base = [
        "--device",
        args.device,
        "--iterations",
        str(args.iterations),
        "--repeats",
        str(args.repeats),
        "--no-naive",
        "--student-steps",
        "10",
    ]
    if args.threads:
        base += ["--threads", str(args.threads)]
    if args.cuda_graph:
        base += ["--cuda-graph"]
    out = [("chains", base + ["--chains", args.chains])]
    for w in args.widths.split(","):
        out.append((f"width {w}", base + ["--chains", "1", "--teacher-width", w]))
    for b in args.batches.split(","):
        out.append((f"batch {b}", base + ["--chains", "1", "--batch", b]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iterations", type=int, default=400, help="iterations per row (c chains run iterations/c)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cuda-graph", action="store_true")
    ap.add_argument("--chains", default="1,2,4,8,16,32,64")
    ap.add_argument("--widths", default="100,400,1200")
    ap.add_argument("--batches", default="32,100,500,1000")
    ap.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = ap.parse_args()
    table, device = [], None
    for label, argv in rows(args):
        with contextlib.redirect_stdout(io.StringIO()):
            res = bench_distill.main(argv)
        device = res["device"]
        s = res["settings"]
        for c, rec in res["teacher"].items():
            f = res["flops"][c]
            table.append(
                {
                    "row": label,
                    "chains": int(c),
                    "teacher": s["teacher"],
                    "batch": s["batch"],
                    "ms_per_iteration": rec["ms_per_iteration"],
                    "ms_per_chain_iteration": rec["ms_per_chain_iteration"],
                    "posterior_samples_per_s": rec["posterior_samples_per_s"],
                    "gflop_per_iteration": f["gflop_per_iteration"],
                    "achieved_tflops": f["achieved_tflops"],
                    "fraction_of_matmul": f["fraction_of_matmul"],
                    "fraction_of_nominal": f["fraction_of_nominal"],
                    "matmul_fp32_tflops": res["flops"]["matmul_fp32_tflops_measured"],
                }
            )
        print(f"{label}: done", file=sys.stderr)
    print(
        json.dumps(
            {
                "device": device,
                "threads": args.threads,
                "cuda_graph": args.cuda_graph,
                "rows": table,
            },
            indent=2,
        )
    )
    if args.markdown:
        print(
            "\n| row | teacher | batch | chains | ms/it | ms/chain-it | samples/s | GFLOP/it | TFLOP/s | of matmul |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        )
        for r in table:
            print(
                f"| {r['row']} | {r['teacher']} | {r['batch']} | {r['chains']} | {r['ms_per_iteration']:.3f} | "
                f"{r['ms_per_chain_iteration']:.3f} | {r['posterior_samples_per_s']:.0f} | "
                f"{r['gflop_per_iteration']:.3f} | {r['achieved_tflops']:.4f} | {r['fraction_of_matmul']:.1%} |"
            )


if __name__ == "__main__":
    main()
