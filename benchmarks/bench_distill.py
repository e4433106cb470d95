"""Speed of the SGLD teacher + online distillation loop, against a naive reference-style loop.

Prints one JSON object (and writes it to ``--json-out``). Everything is measured in the same
process on the same data and settings, so ``speedup_vs_naive`` is a side-by-side ratio:

* ``teacher``: :func:`gped_search.distill.loop.run_teacher` on the paper's MNIST teacher
  (MLP 784-400-400-10 or the MNIST CNN) at batch 100, one student step every H iterations and
  test-set accumulation every ``thin`` iterations, for each chain count in ``--chains``;
* ``student``: :func:`gped_search.distill.loop.train_student` with cached targets (steps/s);
* ``naive``: the same work written like the reference code (nn.Module teacher, a Python loop over
  parameters with ``p.data.add_``, ``torch.randn`` per parameter, ``loss.item()`` every step);
* ``lockstep``: K students trained together (:func:`train_students`, the search's batch mode) from
  cached targets and from bank replay (``online``), ms per lockstep step for each K in ``--lockstep``
  and its ratio to one student;
* ``flops``: FLOPs per teacher iteration counted by ``torch.utils.flop_counter`` (SGLD step + test
  accumulation / thin + student step and its targets / H), the achieved rate, and its fraction of a
  large fp32 matmul measured on the same device (and of the nominal peak where ``--peak-tflops`` or
  the device table gives one).

Data: random tensors of MNIST's shape (60,000 training and 10,000 test images) unless
``--data-root`` points at real MNIST; the timings do not depend on pixel values.

    python benchmarks/bench_distill.py                       # CPU or the default GPU, ~1-2 min on 2 cores
    python benchmarks/bench_distill.py --device cuda --iterations 20000 --chains 1,4,16 --cuda-graph
    python benchmarks/bench_distill.py --lockstep 1,8 --teacher-width 800 --batch 500
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from gped_search.config import (  # noqa: E402
    DataConfig,
    Dataset,
    DistillConfig,
    TargetMode,
    TeacherArch,
    TeacherConfig,
    to_dict,
)
from gped_search.data import DataBundle, Split, make_bundle  # noqa: E402
from gped_search.distill.loop import TeacherResult, run_teacher, train_student, train_students  # noqa: E402
from gped_search.distill.student import StudentTrainer  # noqa: E402
from gped_search.models import build, student_arch, teacher_arch  # noqa: E402
from gped_search.posterior.expectations import resolve  # noqa: E402
from gped_search.posterior.sgld import SGLD  # noqa: E402

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


def settings(
    args, chains: int, iterations: int, noise_thread: bool = False
) -> tuple[TeacherConfig, DistillConfig, DataConfig]:
    tcfg = TeacherConfig(
        arch=TeacherArch(args.arch),
        iterations=iterations,
        batch_size=args.batch,
        step_size=4e-6,
        prior_precision=10.0,
        burn_in=0,
        thin=args.thin,
        chains=chains,
        bank_size=32,
        check_every=1000,
        cuda_graph=args.cuda_graph,
        noise_thread=noise_thread,
    )
    dcfg = DistillConfig(targets=TARGETS, target_mode=TargetMode.online, every=args.every, transfer_batch=100)
    return tcfg, dcfg, DataConfig(dataset=Dataset.mnist)


def archs(args, bundle: DataBundle):
    heads = tuple((n, 0 if n == "predictive" else 1) for n in TARGETS)
    widths = None if args.teacher_width is None else (args.teacher_width,) * 2
    t = teacher_arch(args.arch, bundle.in_shape, bundle.n_classes, *(() if widths is None else (widths,)))
    s = student_arch(args.arch, bundle.in_shape, bundle.n_classes, heads, widths=(400, 400))
    return t, s


# --------------------------------------------------------------------------- timed blocks


def whole_units(iterations: float, unit: int) -> int:
    """``iterations`` rounded to a multiple of ``unit`` (at least one unit)."""
    return unit * max(1, round(iterations / unit))


class Timer:
    """Collects per-block ms/iteration (or ms/step) and the device's peak memory for one configuration."""

    def __init__(self, device: torch.device):
        self.device, self.ms, self.iters, self.peak = device, [], 0, 0.0

    def add(self, ms: float, iters: int) -> None:
        self.ms.append(ms)
        self.iters += iters
        self.peak = max(self.peak, peak_mib(self.device))

    def summary(self, unit: str = "iteration") -> dict:
        return {
            f"ms_per_{unit}": round(statistics.median(self.ms), 4),
            f"ms_per_{unit}_min": round(min(self.ms), 4),
            f"ms_per_{unit}_blocks": [round(v, 3) for v in self.ms],
            f"{unit}s": self.iters,
            "peak_mib": round(self.peak, 1),
        }


def project_block(
    args, bundle, exps, device, chains: int, iterations: int, seed: int, noise_thread: bool = False
) -> tuple[float, dict]:
    """One run of the project's loop (:func:`run_teacher` with an online student); ms/iteration of its loop."""
    t_arch, s_arch = archs(args, bundle)
    cfgs = settings(args, chains, iterations, noise_thread)
    torch.manual_seed(seed)
    student = StudentTrainer(build(s_arch).to(device), exps, cfgs[1])
    reset_peak(device)
    sync(device)
    res = run_teacher(*cfgs, bundle, t_arch, exps, seed=seed, students=(student,), progress=False)
    sync(device)  # run_teacher's timer stops after its last host sync (the divergence check)
    return res.stats["ms_per_iteration"], res.stats


def student_block(trainer, teacher, bundle, dcfg, data_cfg, steps: int, seed: int, device) -> float:
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    train_student(trainer, teacher, bundle.transfer, steps, dcfg, data_cfg, seed=seed)
    sync(device)
    return 1000 * (time.perf_counter() - start) / steps


def student_setup(args, bundle, exps, device):
    """Student steps from cached transfer-set targets (what search trials do). The targets are random
    distributions: only their shapes matter for speed."""
    t_arch, s_arch = archs(args, bundle)
    _, dcfg, data_cfg = settings(args, 1, 2)
    dcfg = replace(dcfg, target_mode=TargetMode.cached)
    n = bundle.transfer.shape[0]
    g = torch.Generator(device=device).manual_seed(0)
    cached = {
        "predictive": torch.randn(n, 10, device=device, generator=g).softmax(-1),
        "expected_entropy": torch.rand(n, 1, device=device, generator=g),
    }
    teacher = TeacherResult(t_arch, test={}, ood=None, transfer=cached, bank={}, metrics={})
    torch.manual_seed(0)
    trainer = StudentTrainer(build(s_arch).to(device), exps, dcfg)
    return trainer, teacher, dcfg, data_cfg


def lockstep_setup(args, bundle, exps, device, k: int, mode: str):
    """K students (the benchmark's student architecture) from cached targets or bank replay."""
    trainer, teacher, dcfg, data_cfg = student_setup(args, bundle, exps, device)
    if mode == "online":  # a bank of 8 teacher samples (shapes only matter for speed)
        model = build(teacher.arch).to(device)
        bank = {n: torch.stack([p.detach() + 0.01 * i for i in range(8)]) for n, p in model.named_parameters()}
        teacher = TeacherResult(teacher.arch, test={}, ood=None, transfer=None, bank=bank, metrics={})
        dcfg = replace(dcfg, target_mode=TargetMode.online)
    _, s_arch = archs(args, bundle)
    trainers = [trainer]
    for i in range(1, k):
        torch.manual_seed(i)
        trainers.append(StudentTrainer(build(s_arch).to(device), exps, dcfg))
    return trainers, teacher, dcfg, data_cfg


def lockstep_block(trainers, teacher, bundle, dcfg, data_cfg, steps: int, seed: int, device) -> float:
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    train_students(trainers, teacher, bundle.transfer, steps, dcfg, data_cfg, seed=seed, check_every=10**9)
    sync(device)
    return 1000 * (time.perf_counter() - start) / steps


def count_flops(args, bundle, exps, device, chains: int) -> dict:
    """FLOPs of one loop iteration, counted by torch's FlopCounterMode on the real calls."""
    from torch.utils.flop_counter import FlopCounterMode

    t_arch, s_arch = archs(args, bundle)
    sampler = SGLD(
        t_arch,
        bundle.train.x,
        bundle.train.y,
        step_size=4e-6,
        prior_precision=10.0,
        batch_size=args.batch,
        chains=chains,
    )

    def flops(fn) -> int:
        with FlopCounterMode(display=False) as fc:
            fn()
        return int(fc.get_total_flops())

    step = flops(sampler.step)
    test = flops(lambda: sampler.logits(bundle.test.x))
    x = bundle.transfer[:100]
    targets = flops(lambda: sampler.logits(x))
    _, dcfg, _ = settings(args, chains, 2)
    student = StudentTrainer(build(s_arch).to(device), exps, dcfg)
    t = {
        "predictive": torch.full((100, 10), 0.1, device=device),
        "expected_entropy": torch.zeros(100, 1, device=device),
    }
    stu = flops(lambda: student.step(x, t))
    per_it = step + test / args.thin + (targets + stu) / args.every
    return {
        "sgld_step": step,
        "test_pass": test,
        "student_step": stu,
        "student_targets": targets,
        "per_iteration": round(per_it),
        "gflop_per_iteration": round(per_it / 1e9, 4),
    }


def matmul_tflops(device: torch.device, n: int = 4096, repeats: int = 10) -> float:
    """Measured fp32 throughput of an n x n matmul (a practical ceiling for this device, TF32 off)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    allow = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        a @ b
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


NOMINAL_FP32_TFLOPS = {"H100": 67.0, "H200": 67.0, "A100": 19.5}
"""Dense fp32 (non-tensor-core) peaks of SXM parts, from the vendors' data sheets."""


# --------------------------------------------------------------------------- the naive baseline


class NaiveLoop:
    """The same work as ``run_teacher`` with one chain (SGLD step; test-set accumulation every ``thin``;
    a student step every H from the current sample), written the way the reference code writes it:
    an nn.Module teacher, a Python loop over its parameters updating ``p.data`` with a fresh
    ``torch.randn`` each, and ``loss.item()`` (a host sync) every iteration. Minibatches are drawn by
    index from the same device tensors (the reference's DataLoader would only add overhead)."""

    def __init__(self, args, bundle: DataBundle, device: torch.device):
        t_arch, s_arch = archs(args, bundle)
        torch.manual_seed(0)
        self.teacher = build(t_arch).to(device)  # a plain nn.Module
        self.student = build(s_arch).to(device)
        self.opt = torch.optim.Adam(self.student.parameters(), lr=1e-3)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, 2000, 0.5)
        self.args, self.bundle, self.device = args, bundle, device
        self.test_proba = torch.zeros(bundle.test.x.shape[0], 10, device=device)
        self.test_entropy = torch.zeros(bundle.test.x.shape[0], 1, device=device)
        self.losses: list[float] = []

    def run(self, steps: int) -> float:
        """``steps`` iterations; returns ms/iteration."""
        args, device, teacher, student = self.args, self.device, self.teacher, self.student
        x, y, xt, xs = (
            self.bundle.train.x,
            self.bundle.train.y,
            self.bundle.test.x,
            self.bundle.transfer,
        )
        n, eta, lam = x.shape[0], 4e-6, 10.0
        reset_peak(device)
        sync(device)
        start = time.perf_counter()
        for t in range(1, steps + 1):
            idx = torch.randint(0, n, (args.batch,), device=device)
            data, target = x[idx], y[idx]
            teacher_loss = F.nll_loss(F.log_softmax(teacher(data)[0], 1), target)
            for w in teacher.parameters():
                if w.grad is not None:
                    w.grad.data.zero_()
            teacher_loss.backward()
            for w in teacher.parameters():
                w.data.add_(
                    -eta / 2.0 * (w.grad.data * n + lam * w.data) + torch.randn(w.shape, device=device) * math.sqrt(eta)
                )
            self.losses.append(teacher_loss.item())  # host sync every iteration
            if t % args.thin == 0:
                with torch.no_grad():
                    p = F.softmax(teacher(xt)[0], 1)
                    self.test_proba.add_(p)
                    self.test_entropy.add_(-(p * torch.log(p + 1e-12)).sum(1, keepdim=True))
            if t % args.every == 0:
                sidx = torch.randint(0, xs.shape[0], (100,), device=device)
                xb = (xs[sidx] + torch.randn(xs[sidx].shape, device=device) * 0.001).clamp(0, 1)
                with torch.no_grad():
                    tp = F.softmax(teacher(xb)[0], 1)
                    th = -(tp * torch.log(tp + 1e-12)).sum(1, keepdim=True)
                logits, ent = student(xb)
                student_loss = -(tp * F.log_softmax(logits, 1)).sum(1).mean() + (ent - th).abs().mean()
                self.opt.zero_grad()
                student_loss.backward()
                self.opt.step()
                self.sched.step()
        sync(device)
        ms = 1000 * (time.perf_counter() - start) / steps
        if not math.isfinite(self.losses[-1]):
            raise FloatingPointError("the naive loop diverged")
        return ms


# --------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--iterations",
        type=int,
        default=2000,
        help="SGLD iterations timed for one chain and for the naive loop, split over --repeats "
        "rounds; c chains run iterations / c (the same number of posterior samples); default 2000",
    )
    ap.add_argument(
        "--naive-iterations",
        type=int,
        default=None,
        help="iterations of the naive loop (default: --iterations)",
    )
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--chains", default="1,4", help="comma-separated chain counts (default 1,4)")
    ap.add_argument(
        "--noise-thread",
        choices=("off", "on", "both"),
        default="both",
        help="teacher.noise_thread: time the loop without, with, or both side by side (default both)",
    )
    ap.add_argument("--arch", choices=["mlp", "cnn"], default="mlp", help="paper's MNIST MLP or CNN teacher")
    ap.add_argument("--batch", type=int, default=100, help="teacher minibatch (default 100)")
    ap.add_argument("--every", type=int, default=100, help="H: a student step every H iterations (default 100)")
    ap.add_argument("--thin", type=int, default=100, help="test-set accumulation every `thin` iterations")
    ap.add_argument("--student-steps", type=int, default=500, help="cached-target student steps to time")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--data-root", default=None, help="real MNIST under DATA_ROOT/MNIST/raw (default: random)")
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="interleaved rounds; each configuration's iterations are split over them",
    )
    ap.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    ap.add_argument(
        "--cuda-graph",
        action="store_true",
        help="replay the SGLD step from a CUDA graph (CUDA only)",
    )
    ap.add_argument(
        "--tf32",
        action="store_true",
        help="allow TF32 matmuls and convolutions (CUDA; default fp32)",
    )
    ap.add_argument("--teacher-width", type=int, default=None, help="MLP teacher hidden width (default 400)")
    ap.add_argument(
        "--lockstep",
        default="",
        help="comma-separated student counts K for the lockstep timing, e.g. 1,8 (default: none)",
    )
    ap.add_argument("--lockstep-steps", type=int, default=200, help="lockstep steps timed per K and mode")
    ap.add_argument("--no-flops", action="store_true", help="skip FLOP counting and the matmul reference")
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="nominal fp32 peak of the device (default: a table for known GPUs, none for CPUs)",
    )
    ap.add_argument("--json-out", default=None, help="also write the JSON object here")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    chains = [int(c) for c in args.chains.split(",") if c.strip()]
    if not chains or min(chains) < 1:
        ap.error("--chains must list positive integers, e.g. 1,4")
    lock_ks = [int(k) for k in args.lockstep.split(",") if k.strip()]
    if lock_ks and min(lock_ks) < 1:
        ap.error("--lockstep must list positive integers, e.g. 1,8")
    if args.teacher_width is not None and args.arch != "mlp":
        ap.error("--teacher-width applies to the MLP teacher")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            ap.error(f"--device {args.device}: CUDA is not available")
    if args.cuda_graph and device.type != "cuda":
        ap.error("--cuda-graph needs a CUDA device")
    if device.type == "cuda":  # state the precision: fp32 unless --tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
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
            "n_train": int(bundle.train.x.shape[0]),
            "n_test": int(bundle.test.x.shape[0]),
            "teacher": t_arch.describe(),
            "teacher_params": sum(p.numel() for p in build(t_arch).parameters()),
            "student": s_arch.describe(),
            "batch": args.batch,
            "H": args.every,
            "thin": args.thin,
            "burn_in": 0,
            "iterations": args.iterations,
            "chains": chains,
            "repeats": args.repeats,
            "student_steps": args.student_steps,
            "cuda_graph": args.cuda_graph,
            "lockstep": lock_ks,
            "precision": "fp32" + (", TF32 matmuls and convolutions" if device.type == "cuda" and args.tf32 else ""),
            "teacher_config": to_dict(tcfg),
            "distill_config": to_dict(dcfg),
        },
    }
    # Warm-up (allocator, kernels, vmap tracing), then `repeats` rounds that interleave every
    # configuration, so that a busy machine slows all of them alike; medians over rounds are reported
    # and the speed-up is the median of per-round ratios.
    warm = max(args.every, args.thin)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.noise_thread]
    variants = [(c, nt) for c in chains for nt in modes]
    label = {(c, nt): f"{c}+thread" if nt and len(modes) > 1 else str(c) for c, nt in variants}
    for c, nt in variants:
        project_block(args, bundle, exps, device, c, warm, seed=99, noise_thread=nt)
    naive = NaiveLoop(args, bundle, device) if not args.no_naive else None
    if naive is not None:
        naive.run(warm)
    trainer, cached_teacher, s_dcfg, s_data = student_setup(args, bundle, exps, device)
    student_block(trainer, cached_teacher, bundle, s_dcfg, s_data, 20, 99, device)

    rounds = max(1, args.repeats)
    unit = math.lcm(args.every, args.thin)  # blocks hold whole student-step and accumulation periods
    timers = {v: Timer(device) for v in variants}
    naive_timer, student_timer = Timer(device), Timer(device)
    extra: dict[int, dict] = {}
    for r in range(rounds):
        for c, nt in variants:
            # Chain counts get the same number of posterior samples: iterations / chains each.
            its = whole_units(args.iterations / (c * rounds), unit)
            ms, stats = project_block(args, bundle, exps, device, c, its, seed=r, noise_thread=nt)
            timers[c, nt].add(ms, its)
            extra.setdefault((c, nt), {"student_steps": 0, "test_accumulations": 0})
            extra[c, nt]["student_steps"] += stats["student_steps"]
            extra[c, nt]["test_accumulations"] += stats["test_samples"] // c
        if naive is not None:
            its = whole_units((args.naive_iterations or args.iterations) / rounds, unit)
            naive_timer.add(naive.run(its), its)
        steps = max(1, args.student_steps // rounds)
        student_timer.add(student_block(trainer, cached_teacher, bundle, s_dcfg, s_data, steps, r, device), steps)

    if lock_ks:
        out["lockstep"] = {}
        for mode in ("cached", "online"):
            setups = {k: lockstep_setup(args, bundle, exps, device, k, mode) for k in lock_ks}
            for k in lock_ks:  # warm-up
                tr, te, dc, dd = setups[k]
                lockstep_block(tr, te, bundle, dc, dd, 5, 99, device)
            lt = {k: Timer(device) for k in lock_ks}
            steps = max(1, args.lockstep_steps // rounds)
            for r in range(rounds):
                for k in lock_ks:
                    tr, te, dc, dd = setups[k]
                    lt[k].add(lockstep_block(tr, te, bundle, dc, dd, steps, r, device), steps)
            recs = {str(k): {"students": k, **lt[k].summary("step")} for k in lock_ks}
            if 1 in lt:
                for k in lock_ks:
                    recs[str(k)]["cost_vs_one_student"] = round(
                        recs[str(k)]["ms_per_step"] / recs["1"]["ms_per_step"], 3
                    )
                    recs[str(k)]["student_steps_per_s"] = round(1000 * k / recs[str(k)]["ms_per_step"], 1)
            out["lockstep"][mode] = recs

    out["teacher"] = {}
    for c, nt in variants:
        rec = {"chains": c, "noise_thread": nt, **timers[c, nt].summary(), **extra[c, nt]}
        ms = rec["ms_per_iteration"]
        rec["ms_per_chain_iteration"] = round(ms / c, 4)
        rec["posterior_samples_per_s"] = round(1000 * c / ms, 1)
        out["teacher"][label[c, nt]] = rec
    if len(modes) > 1:
        out["noise_thread_speedup"] = {
            str(c): round(statistics.median(a / b for a, b in zip(timers[c, False].ms, timers[c, True].ms)), 3)
            for c in chains
        }
    st = student_timer.summary("step")
    out["student"] = {"steps_per_s": round(1000 / st["ms_per_step"], 1), **st}
    if naive is not None:
        out["naive"] = {"chains": 1, **naive_timer.summary()}
        if 1 in chains:
            ratios = [a / b for a, b in zip(naive_timer.ms, timers[1, modes[-1]].ms)]
            out["speedup_vs_naive"] = round(statistics.median(ratios), 3)
            out["speedup_vs_naive_rounds"] = [round(v, 3) for v in ratios]
            out["speedup_vs_naive_best"] = round(min(naive_timer.ms) / min(timers[1, modes[-1]].ms), 3)
    if 1 in chains:
        base = out["teacher"][label[1, modes[0]]]["ms_per_chain_iteration"]
        out["chain_throughput_vs_1"] = {
            k: round(base / v["ms_per_chain_iteration"], 3) for k, v in out["teacher"].items()
        }
    if not args.no_flops:
        ref = matmul_tflops(device)
        nominal = args.peak_tflops or next(
            (v for k, v in NOMINAL_FP32_TFLOPS.items() if device.type == "cuda" and k in out["device"]),
            None,
        )
        out["flops"] = {
            "matmul_fp32_tflops_measured": round(ref, 3),
            "nominal_fp32_tflops": nominal,
        }
        for c, nt in variants:
            f = count_flops(args, bundle, exps, device, c)
            tf = f["per_iteration"] / (out["teacher"][label[c, nt]]["ms_per_iteration"] / 1000) / 1e12
            out["flops"][label[c, nt]] = {
                **f,
                "achieved_tflops": round(tf, 5),
                "fraction_of_matmul": round(tf / ref, 5),
                "fraction_of_nominal": round(tf / nominal, 6) if nominal else None,
            }
    out["load_average_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    out["total_s"] = round(time.perf_counter() - t_start, 1)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
