"""ONNX files of a student and ONNX Runtime sessions over them: the fp32 writer (the one
:mod:`gped_search.exporting` uses), a session that scores like a student, and its latency.

onnx, onnxscript and onnxruntime are optional (``pip install gped-search[onnx]``); nothing here
imports them at module level.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from gped_search.errors import ExportError, one_line
from gped_search.metrics.cost import quantile
from gped_search.models.nets import Arch

__all__ = [
    "EXTRA",
    "ONNX_HINT",
    "onnx_missing",
    "ort_missing",
    "write_onnx",
    "strip_debug",
    "session",
    "OrtStudent",
    "measure_latency_ort",
]

EXTRA = "pip install gped-search[onnx]"
ONNX_HINT = f"ONNX export needs the optional 'onnx' package: pip install onnx onnxscript (or {EXTRA})"


def onnx_missing() -> list[str]:
    """The packages ONNX export needs that are not installed."""
    return [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]


def ort_missing() -> list[str]:
    """The packages int8 quantization and ONNX Runtime latency need that are not installed."""
    return onnx_missing() + (["onnxruntime"] if importlib.util.find_spec("onnxruntime") is None else [])


def write_onnx(model: nn.Module, x: torch.Tensor, path: Path, head_names: Sequence[str]) -> tuple[bool, str]:
    """``torch.onnx.export`` (dynamo) of ``model`` on ``x`` into ``path``: input ``x``, one output per
    head, the batch dimension dynamic where export allows it. Returns (dynamic, note)."""
    kwargs = dict(
        input_names=["x"],
        output_names=list(head_names),
        dynamo=True,
        external_data=False,
        verbose=False,
    )  # no exporter chatter on the console
    try:
        try:
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                **kwargs,
            )
            return True, "batch dimension dynamic (min 1)"
        except ImportError:
            raise
        except Exception as e:
            reason = f"dynamic batch ONNX export failed ({one_line(e)}); static batch {x.shape[0]}"
            Path(path).unlink(missing_ok=True)
            torch.onnx.export(model, (x,), str(path), **kwargs)
            return False, reason
    except ImportError as e:
        raise ExportError(ONNX_HINT) from e
    except Exception as e:
        raise ExportError(f"ONNX export failed ({one_line(e)})") from e


def strip_debug(path: str | Path) -> int:
    """Drop the exporter's per-node debug metadata (module paths, class hierarchies, rewrite rules: about
    a third of a small student's file) and doc strings from an ONNX file, in place; returns its new size.
    The graph, its weights and shapes are untouched."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.graph.doc_string = ""
    onnx.save(model, str(path))
    return Path(path).stat().st_size


def session(path: str | Path, threads: int = 1):
    """An ONNX Runtime CPU session on ``threads`` threads (1: it computes on the calling thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class OrtStudent:
    """An ONNX file of a student, scored like the student: ``named_outputs(x)`` gives torch tensors
    per head (on ``x``'s device), so :func:`gped_search.metrics.quality.student_outputs` and
    everything built on it measure the ONNX model itself."""

    training = False

    def __init__(self, path: str | Path, arch: Arch, threads: int = 1):
        self.path = Path(path)
        self.arch = arch
        self.sess = session(self.path, threads)
        self.input = self.sess.get_inputs()[0].name

    def eval(self) -> OrtStudent:
        return self

    def train(self, mode: bool = True) -> OrtStudent:
        return self

    def run(self, x):
        import numpy as np

        return self.sess.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = self.run(x.detach().cpu().float().numpy())
        return tuple(torch.from_numpy(o).to(x.device) for o in outs)

    def named_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.arch.head_names, self(x)))


def measure_latency_ort(
    path_or_session,
    in_shape: Sequence[int],
    batch: int = 1,
    repeats: int = 50,
    warmup: int = 10,
    block_ms: float = 2.0,
    device: str = "cpu",
    threads: int | None = 1,
) -> dict:
    """One ONNX Runtime call on a ``(batch, *in_shape)`` input, timed like
    :func:`gped_search.metrics.cost.measure_latency` on a CPU: a one-thread session (it runs on the
    calling thread), ``repeats`` blocks of about ``block_ms`` each on the thread's CPU time.
    ``device`` and ``threads`` are accepted for :func:`~gped_search.metrics.cost.calibrate_latency`:
    the session is always the CPU's, on one thread."""
    import numpy as np

    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    sess = session(path_or_session, 1) if isinstance(path_or_session, (str, Path)) else path_or_session
    feed = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal((batch, *in_shape), np.float32)}
    for _ in range(warmup):
        sess.run(None, feed)
    timer = time.thread_time
    t0 = timer()
    sess.run(None, feed)
    inner = max(1, min(1000, int(block_ms / max((timer() - t0) * 1e3, 1e-4))))
    times = []
    for _ in range(repeats):
        t0 = timer()
        for _ in range(inner):
            sess.run(None, feed)
        times.append((timer() - t0) * 1e3 / inner)
    times.sort()
    return {
        "median_ms": quantile(times, 0.5),
        "p10_ms": quantile(times, 0.1),
        "p90_ms": quantile(times, 0.9),
        "mean_ms": sum(times) / len(times),
        "device": "cpu",
        "threads": 1,
        "batch": int(batch),
        "in_shape": [int(v) for v in in_shape],
        "repeats": int(repeats),
        "warmup": int(warmup),
        "clock": "thread",
        "calls_per_block": int(inner),
        "backend": "onnxruntime",
    }
