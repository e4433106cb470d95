"""Size, compute and latency of a network.

``cost_figures`` counts with ``torch_pruning.utils.count_ops_and_params``. Despite its internal
"flops" naming, that counter (ptflops-style) counts one op per multiply-accumulate of a
``Linear``/``Conv2d`` plus one per bias element, ReLU output element and pooling input element:
it is reported as ``macs``. ``macs_conv_linear`` counts only the multiply-accumulates of the
convolutions and linear layers (bias, activation and pooling excluded). Both are for ONE sample:
the counter is always run at batch 1, because it adds each ``Linear`` bias once per call rather
than per sample, so at batch B its per-sample average is wrong.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn

__all__ = ["cost_figures", "layer_costs", "machine_description", "measure_latency", "calibrate_latency", "quantile"]


def _conv_linear_macs(model: nn.Module, x: Tensor) -> int:
    total = 0

    def hook(m: nn.Module, inputs, output: Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Linear):
            total += m.in_features * output.numel()
        else:  # Conv2d: each output element needs (in/groups) * kh * kw MACs
            total += (m.in_channels // m.groups) * math.prod(m.kernel_size) * output.numel()

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return total


def machine_description(device: str | torch.device = "cpu") -> str:
    """What a latency was measured on, for records and model cards: the GPU's name, or the CPU's model
    and logical CPU count (from /proc/cpuinfo, else the platform). Never the host's name."""
    import os
    import platform

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    model = ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.lower().startswith("model name") and ":" in line:
                model = " ".join(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    return f"{model}, {os.cpu_count() or 1} logical CPUs"


@torch.no_grad()
def layer_costs(model: nn.Module, example_input: Tensor) -> list[dict]:
    """Per Linear / Conv2d layer in forward order: ``layer`` (module name), ``kind``, ``shape`` (out x in
    [x kh x kw]), ``params`` (weights and bias) and ``macs`` for one sample: the same counts as
    ``macs_conv_linear`` of :func:`cost_figures`, split by layer."""
    rows: list[dict] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(m: nn.Module, inputs, output: Tensor) -> None:
        if isinstance(m, nn.Linear):
            macs, shape = m.in_features * output.numel(), f"{m.out_features}x{m.in_features}"
        else:
            macs = (m.in_channels // m.groups) * math.prod(m.kernel_size) * output.numel()
            shape = f"{m.out_channels}x{m.in_channels // m.groups}x" + "x".join(map(str, m.kernel_size))
        params = sum(p.numel() for p in m.parameters(recurse=False))
        rows.append({"layer": names[m], "kind": type(m).__name__, "shape": shape, "params": params, "macs": macs})

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    was_training = model.training
    model.eval()
    try:
        model(example_input[:1])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return rows


def cost_figures(model: nn.Module, example_input: Tensor) -> dict:
    """``params``, ``buffers`` (elements), ``bytes_fp32``, ``bytes_fp16``, ``macs``, ``macs_conv_linear``.

    Bytes are parameters plus floating buffers at 4 / 2 bytes each, plus non-floating buffers at
    their own size. Per one sample (``example_input`` is cut to its first row).
    """
    params = sum(p.numel() for p in model.parameters())
    fbuf = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    obuf_bytes = sum(b.numel() * b.element_size() for b in model.buffers() if not b.is_floating_point())
    device = next(model.parameters()).device
    x = example_input[:1].detach().to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            macs, tp_params = tp.utils.count_ops_and_params(model, x)
            macs_cl = _conv_linear_macs(model, x)
    finally:
        model.train(was_training)
    if int(tp_params) != params:  # torch-pruning counts the same parameters; guard against drift
        raise RuntimeError(f"parameter counts disagree: {params} vs torch-pruning {tp_params}")
    return {
        "params": int(params),
        "buffers": int(sum(b.numel() for b in model.buffers())),
        "bytes_fp32": int((params + fbuf) * 4 + obuf_bytes),
        "bytes_fp16": int((params + fbuf) * 2 + obuf_bytes),
        "macs": int(round(float(macs))),
        "macs_conv_linear": int(macs_cl),
    }


def quantile(sorted_vals: Sequence[float], q: float) -> float:
    pos = q * (len(sorted_vals) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def _block_size(net: nn.Module, x: Tensor, timer, target_ms: float) -> int:
    """Calls per timed block so that one block takes about ``target_ms`` (timer granularity and the
    scheduler's time slices then matter less than the work)."""
    t0 = timer()
    net(x)
    one = max((timer() - t0) * 1e3, 1e-4)
    return max(1, min(1000, int(target_ms / one)))


def measure_latency(
    model: nn.Module,
    in_shape: Sequence[int],
    batch: int = 1,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    repeats: int = 50,
    warmup: int = 10,
    clock: str = "auto",
    block_ms: float = 2.0,
) -> dict:
    """Time of one forward pass of a ``(batch, *in_shape)`` input, in eval/inference mode.

    CPU: ``repeats`` timed blocks of several calls each (about ``block_ms`` per block), with
    ``torch.set_num_threads(threads)`` (restored afterwards) when ``threads`` is given. The clock
    (``auto``) is the calling thread's CPU time (``time.thread_time``) when torch runs on one
    thread: time the OS gave to another process on a shared CPU is not counted, which is what made
    wall-clock latencies rank students differently from one run to the next. With several threads
    it is wall time (``clock="wall"`` forces it). CUDA: CUDA events, synchronised, one call each.
    The model is measured on a copy when it lives on another device, so the caller's model is
    never moved. Returns the median and 10th/90th percentiles per call in ms and what was measured.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    device = torch.device(device)
    on = next(model.parameters()).device
    net = model if on == device else copy.deepcopy(model).to(device)
    x = torch.randn(batch, *in_shape, device=device)
    was_training = net.training
    old_threads = torch.get_num_threads()
    times: list[float] = []
    try:
        net.eval()
        if threads is not None and device.type == "cpu":
            torch.set_num_threads(int(threads))
        used_threads = torch.get_num_threads()
        if clock == "auto":
            clock = "thread" if device.type == "cpu" and used_threads == 1 else "wall"
        timer = time.thread_time if clock == "thread" else time.perf_counter
        with torch.inference_mode():
            for _ in range(warmup):
                net(x)
            inner = _block_size(net, x, timer, block_ms) if device.type == "cpu" else 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                for _ in range(repeats):
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    start.record()
                    net(x)
                    end.record()
                    end.synchronize()
                    times.append(float(start.elapsed_time(end)))
            else:
                for _ in range(repeats):
                    t0 = timer()
                    for _ in range(inner):
                        net(x)
                    times.append((timer() - t0) * 1e3 / inner)
    finally:
        torch.set_num_threads(old_threads)
        net.train(was_training)
    times.sort()
    return {
        "median_ms": quantile(times, 0.5),
        "p10_ms": quantile(times, 0.1),
        "p90_ms": quantile(times, 0.9),
        "mean_ms": sum(times) / len(times),
        "device": str(device),
        "machine": machine_description(device),
        "threads": used_threads if device.type == "cpu" else None,
        "batch": int(batch),
        "in_shape": [int(v) for v in in_shape],
        "repeats": int(repeats),
        "warmup": int(warmup),
        "clock": clock if device.type == "cpu" else "cuda_events",
        "calls_per_block": int(inner),
    }


def calibrate_latency(
    models: dict,
    in_shape: Sequence[int],
    batch: int = 1,
    device: str | torch.device = "cpu",
    threads: int | None = 1,
    rounds: int = 10,
    repeats: int = 10,
    seed: int = 0,
    measure=None,
) -> dict:
    """Re-measure several models together: ``rounds`` rounds, each timing every model (in a shuffled
    order) for ``repeats`` blocks, so slow phases of a shared machine hit all of them alike.

    Returns ``{name: {"median_ms", "p10_ms", "p90_ms"}}`` over every block of every round.
    ``measure`` (default :func:`measure_latency`) times one model with the same arguments.
    """
    import random

    rng = random.Random(seed)
    names = list(models)
    samples: dict = {n: [] for n in names}
    for _ in range(rounds):
        rng.shuffle(names)
        for n in names:
            r = (measure or measure_latency)(
                models[n],
                in_shape,
                batch=batch,
                device=device,
                threads=threads,
                repeats=repeats,
                warmup=2,
            )
            samples[n].append(r)
    out = {}
    for n, rs in samples.items():
        meds = sorted(r["median_ms"] for r in rs)
        out[n] = {
            "median_ms": quantile(meds, 0.5),
            "p10_ms": quantile(meds, 0.1),
            "p90_ms": quantile(meds, 0.9),
            "rounds": rounds,
            "clock": rs[0]["clock"],
        }
    return out
