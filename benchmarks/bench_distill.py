"""Speed of the SGLD teacher + online distillation loop, against a naive reference-style loop.

Prints one JSON object (and writes it to ``--json-out``). Everything is measured in the same
process on the same data and settings, so ``speedup_vs_naive`` is a side-by-side ratio:

* ``teacher``: :func:`gped_search.distill.loop.run_teacher` on the paper's MNIST teacher
  (MLP 784-400-400-10 or the MNIST CNN) at batch 100, one student step every H iterations and
  test-set accumulation every ``thin`` iterations, for each chain count in ``--chains``;
* ``student``: :func:`gped_search.distill.loop.train_student` with cached targets (steps/s);
* ``naive``: the same work written like the reference code (nn.Module teacher, a Python loop over
  parameters with ``p.data.add_``, ``torch.randn`` per parameter, ``loss.item()`` every step).

Data: random tensors of MNIST's shape (60,000 training and 10,000 test images) unless
``--data-root`` points at real MNIST; the timings do not depend on pixel values.

    python benchmarks/bench_distill.py                       # CPU or the default GPU, ~1-2 min on 2 cores
    python benchmarks/bench_distill.py --device cuda --iterations 20000 --chains 1,4,16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from gped_search.config import (  # noqa: E402
    DataConfig,
    Dataset,
    DistillConfig,
    TargetMode,
    TeacherConfig,
    TeacherArch,
    to_dict,
)
from gped_search.data import DataBundle, Split, make_bundle  # noqa: E402
from gped_search.distill.loop import TeacherResult, run_teacher, train_student  # noqa: E402
from gped_search.distill.student import StudentTrainer  # noqa: E402
from gped_search.models import build, student_arch, teacher_arch  # noqa: E402
from gped_search.posterior.expectations import resolve  # noqa: E402

TARGETS = ("predictive", "expected_entropy")


# --------------------------------------------------------------------------- machine and memory

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    """GPU: peak allocated by torch since the last reset. CPU: the process's peak RSS so far
    (a high-water mark over the whole run, never reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


# --------------------------------------------------------------------------- data and settings

def make_data(data_root: str | None, device: torch.device, seed: int) -> DataBundle:
    if data_root:
        return make_bundle(DataConfig(dataset=Dataset.mnist, root=data_root), seed, device)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(60_000, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (60_000,), generator=g)
    xt = torch.rand(10_000, 1, 28, 28, generator=g)
    yt = torch.randint(0, 10, (10_000,), generator=g)
    train = Split(x, y).to(device)
    return DataBundle("random-mnist-shape", train, train.x, Split(xt, yt).to(device), 10)


def settings(args, chains: int, iterations: int) -> tuple[TeacherConfig, DistillConfig, DataConfig]:
    tcfg = TeacherConfig(arch=TeacherArch(args.arch), iterations=iterations, batch_size=args.batch,
                         step_size=4e-6, prior_precision=10.0, burn_in=0, thin=args.thin, chains=chains,
                         bank_size=32, check_every=1000)
    dcfg = DistillConfig(targets=TARGETS, target_mode=TargetMode.online, every=args.every, transfer_batch=100)
    return tcfg, dcfg, DataConfig(dataset=Dataset.mnist)


def archs(args, bundle: DataBundle):
    heads = tuple((n, 0 if n == "predictive" else 1) for n in TARGETS)
    t = teacher_arch(args.arch, bundle.in_shape, bundle.n_classes)
    s = student_arch(args.arch, bundle.in_shape, bundle.n_classes, heads, widths=(400, 400))
    return t, s


# --------------------------------------------------------------------------- the project's loop

def bench_teacher(args, bundle, exps, device, chains: int) -> dict:
    t_arch, s_arch = archs(args, bundle)
    cfgs = settings(args, chains, args.iterations)

    def once(cfgs, seed):
        torch.manual_seed(seed)
        student = StudentTrainer(build(s_arch).to(device), exps, cfgs[1])
        return run_teacher(*cfgs, bundle, t_arch, exps, seed=seed, students=(student,), progress=False)

    once(settings(args, chains, max(2 * args.every, 2 * args.thin)), seed=1)  # warm-up: allocator, kernels
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    res = once(cfgs, seed=0)
    sync(device)
    wall = time.perf_counter() - start
    ms = res.stats["ms_per_iteration"]
    return {"chains": chains, "iterations": args.iterations, "ms_per_iteration": round(ms, 4),
            "ms_per_chain_iteration": round(ms / chains, 4),
            "posterior_samples_per_s": round(1000 * chains / ms, 1),
            "student_steps": res.stats["student_steps"], "test_accumulations": res.stats["test_samples"] // chains,
            "wall_s": round(wall, 3), "peak_mib": round(peak_mib(device), 1)}


def bench_student(args, bundle, exps, device) -> dict:
    """Student steps from cached transfer-set targets (what search trials do). The targets are random
    distributions: only their shapes matter for speed."""
    t_arch, s_arch = archs(args, bundle)
    _, dcfg, data_cfg = settings(args, 1, 2)
    dcfg = replace(dcfg, target_mode=TargetMode.cached)
    n = bundle.transfer.shape[0]
    g = torch.Generator(device=device).manual_seed(0)
    cached = {"predictive": torch.randn(n, 10, device=device, generator=g).softmax(-1),
              "expected_entropy": torch.rand(n, 1, device=device, generator=g)}
    teacher = TeacherResult(t_arch, test={}, ood=None, transfer=cached, bank={}, metrics={})
    torch.manual_seed(0)
    trainer = StudentTrainer(build(s_arch).to(device), exps, dcfg)
    train_student(trainer, teacher, bundle.transfer, 20, dcfg, data_cfg)  # warm-up
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    out = train_student(trainer, teacher, bundle.transfer, args.student_steps, dcfg, data_cfg)
    sync(device)
    wall = time.perf_counter() - start
    return {"steps": args.student_steps, "steps_per_s": round(args.student_steps / wall, 1),
            "ms_per_step": round(1000 * wall / args.student_steps, 4),
            "loop_steps_per_s": round(out["steps_per_second"], 1), "peak_mib": round(peak_mib(device), 1)}


# --------------------------------------------------------------------------- the naive baseline

def naive_loop(args, bundle, device, iterations: int) -> dict:
    """The same work as ``run_teacher`` with one chain, written the way the reference code writes it."""
    t_arch, s_arch = archs(args, bundle)
    torch.manual_seed(0)
    teacher = build(t_arch).to(device)  # a plain nn.Module
    student = build(s_arch).to(device)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2000, 0.5)
    x, y, xt, xs = bundle.train.x, bundle.train.y, bundle.test.x, bundle.transfer
    n, eta, lam = x.shape[0], 4e-6, 10.0
    test_proba = torch.zeros(xt.shape[0], 10, device=device)
    test_entropy = torch.zeros(xt.shape[0], 1, device=device)
    losses = []

    def run(steps):
        for t in range(1, steps + 1):
            idx = torch.randint(0, n, (args.batch,), device=device)
            data, target = x[idx], y[idx]
            teacher_loss = F.nll_loss(F.log_softmax(teacher(data)[0], 1), target)
            for w in teacher.parameters():
                if w.grad is not None:
                    w.grad.data.zero_()
            teacher_loss.backward()
            for w in teacher.parameters():
                w.data.add_(-eta / 2.0 * (w.grad.data * n + lam * w.data)
                            + torch.randn(w.shape, device=device) * math.sqrt(eta))
            losses.append(teacher_loss.item())  # host sync every iteration
            if t % args.thin == 0:
                with torch.no_grad():
                    p = F.softmax(teacher(xt)[0], 1)
                    test_proba.add_(p)
                    test_entropy.add_(-(p * torch.log(p + 1e-12)).sum(1, keepdim=True))
            if t % args.every == 0:
                sidx = torch.randint(0, xs.shape[0], (100,), device=device)
                xb = (xs[sidx] + torch.randn(xs[sidx].shape, device=device) * 0.001).clamp(0, 1)
                with torch.no_grad():
                    tp = F.softmax(teacher(xb)[0], 1)
                    th = -(tp * torch.log(tp + 1e-12)).sum(1, keepdim=True)
                logits, ent = student(xb)
                student_loss = -(tp * F.log_softmax(logits, 1)).sum(1).mean() + (ent - th).abs().mean()
                opt.zero_grad()
                student_loss.backward()
                opt.step()
                sched.step()

    run(max(2 * args.every, 2 * args.thin))  # warm-up
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    run(iterations)
    sync(device)
    wall = time.perf_counter() - start
    if not all(map(math.isfinite, losses)):
        raise FloatingPointError("naive loop diverged")
    ms = 1000 * wall / iterations
    return {"chains": 1, "iterations": iterations, "ms_per_iteration": round(ms, 4), "wall_s": round(wall, 3),
            "peak_mib": round(peak_mib(device), 1)}


# --------------------------------------------------------------------------- main

def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=2000, help="SGLD iterations per timed run (default 2000)")
    ap.add_argument("--naive-iterations", type=int, default=None,
                    help="iterations of the naive loop (default: --iterations)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--chains", default="1,4", help="comma-separated chain counts (default 1,4)")
    ap.add_argument("--arch", choices=["mlp", "cnn"], default="mlp", help="paper's MNIST MLP or CNN teacher")
    ap.add_argument("--batch", type=int, default=100, help="teacher minibatch (default 100)")
    ap.add_argument("--every", type=int, default=100, help="H: a student step every H iterations (default 100)")
    ap.add_argument("--thin", type=int, default=100, help="test-set accumulation every `thin` iterations")
    ap.add_argument("--student-steps", type=int, default=500, help="cached-target student steps to time")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--data-root", default=None, help="real MNIST under DATA_ROOT/MNIST/raw (default: random)")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    ap.add_argument("--json-out", default=None, help="also write the JSON object here")
    args = ap.parse_args(argv)

    chains = [int(c) for c in args.chains.split(",") if c.strip()]
    if not chains or min(chains) < 1:
        ap.error("--chains must list positive integers, e.g. 1,4")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            ap.error(f"--device {args.device}: CUDA is not available")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)

    bundle = make_data(args.data_root, device, seed=0)
    exps = resolve(TARGETS)
    t_arch, s_arch = archs(args, bundle)
    tcfg, dcfg, _ = settings(args, chains[0], args.iterations)
    out = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "settings": {
            "data": bundle.name if not args.data_root else f"mnist from {args.data_root}",
            "n_train": int(bundle.train.x.shape[0]), "n_test": int(bundle.test.x.shape[0]),
            "teacher": t_arch.describe(), "teacher_params": sum(p.numel() for p in build(t_arch).parameters()),
            "student": s_arch.describe(), "batch": args.batch, "H": args.every, "thin": args.thin,
            "burn_in": 0, "iterations": args.iterations, "student_steps": args.student_steps,
            "teacher_config": to_dict(tcfg), "distill_config": to_dict(dcfg),
        },
    }
    out["teacher"] = {str(c): bench_teacher(args, bundle, exps, device, c) for c in chains}
    out["student"] = bench_student(args, bundle, exps, device)
    if not args.no_naive:
        naive = naive_loop(args, bundle, device, args.naive_iterations or args.iterations)
        out["naive"] = naive
        if "1" in out["teacher"]:
            out["speedup_vs_naive"] = round(naive["ms_per_iteration"] / out["teacher"]["1"]["ms_per_iteration"], 3)
    if "1" in out["teacher"]:
        base = out["teacher"]["1"]["ms_per_chain_iteration"]
        out["chain_throughput_vs_1"] = {c: round(base / r["ms_per_chain_iteration"], 3)
                                        for c, r in out["teacher"].items()}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
