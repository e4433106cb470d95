"""int8 students through ONNX Runtime's quantization.

:func:`quantize_student` writes a student's fp32 ONNX file (:func:`gped_search.quant.onnx.write_onnx`,
the exporter ``gped-search export --format onnx`` uses) and quantizes it:

* MLP students: ``quantize_dynamic`` (int8 weights, activations quantized per call; MatMulInteger);
* CNN students: ``quantize_static`` in QDQ format with per-channel weights, calibrated (MinMax) on
  a few hundred inputs of the transfer set -- never the validation or test set.

On x86 CPUs without VNNI (``avx512_vnni`` / ``avx_vnni``) int8 x int8 dot products can saturate, so
there the weights use ``reduce_range`` (7 bits); the CPU's flags are read, not guessed, and the
result records what was used.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from gped_search.errors import ConfigError, ExportError, one_line
from gped_search.models.nets import arch_of
from gped_search.quant.onnx import EXTRA, ort_missing, strip_debug, write_onnx

__all__ = ["MODES", "Int8Result", "cpu_vnni", "calibration_inputs", "quantize_student", "require_onnxruntime"]

MODES = {"mlp": "dynamic", "cnn": "static_qdq"}
"""Quantization mode per student family."""


def require_onnxruntime(key: str) -> None:
    """Raise a one-line :class:`ConfigError` naming ``key`` and the extra when ORT or onnx is missing."""
    missing = ort_missing()
    if missing:
        raise ConfigError(f"{key}: needs {', '.join(missing)}, not installed: {EXTRA}")


def cpu_vnni(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU has VNNI (``avx512_vnni`` or ``avx_vnni`` in its flags); ``None`` when the
    flags cannot be read. Non-x86 CPUs have no u8s8 saturation issue: reported as ``None``."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            flags |= set(line.split(":", 1)[1].split())
    if not flags:
        return None
    return bool(flags & {"avx512_vnni", "avx_vnni", "avx512vnni"})


def _needs_reduce_range(vnni: bool | None) -> bool:
    x86 = platform.machine().lower() in {"x86_64", "amd64", "i386", "i686"}
    return x86 and vnni is not True


@dataclass
class Int8Result:
    """What :func:`quantize_student` wrote and how."""

    path: Path
    fp32_path: Path
    mode: str
    reduce_range: bool
    vnni: bool | None
    weight_type: str
    activation_type: str
    per_channel: bool
    calibration_size: int
    calibration_set: str
    bytes: int
    fp32_bytes: int
    dynamic_batch: bool

    def record(self) -> dict:
        """Plain data for a trial record or a model card (no paths)."""
        d = asdict(self)
        d.pop("path"), d.pop("fp32_path")
        return d


def calibration_inputs(transfer: torch.Tensor, n: int, transfer_size: int | None = None) -> torch.Tensor:
    """``n`` evenly spaced inputs of the transfer set (of its first ``transfer_size``, as students see)."""
    if n < 1:
        raise ConfigError(f"student.calibration_size must be >= 1, got {n}")
    pool = transfer[:transfer_size] if transfer_size else transfer
    idx = torch.linspace(0, pool.shape[0] - 1, min(n, pool.shape[0])).round().long().unique()
    return pool[idx].detach().cpu().float()


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization logs a pre-processing hint on the root logger on every call."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _head_nodes(path: Path) -> list[str]:
    """The nodes of the output heads: from each graph output back to its first Gemm/MatMul. Static
    quantization keeps them in fp32: quantizing the logits to 8 bits over the calibration range
    clips every test logit outside it."""
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    heads: list[str] = []
    for out in graph.output:
        todo = [out.name]
        while todo:
            node = producer.get(todo.pop())
            if node is None or node.name in heads:
                continue
            heads.append(node.name)
            if node.op_type not in {"Gemm", "MatMul"}:
                todo += [i for i in node.input if i in producer]
    return heads


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a tensor, in chunks."""

    def __init__(self, name: str, x: torch.Tensor, chunk: int = 64):
        self._batches = [{name: x[i : i + chunk].numpy()} for i in range(0, x.shape[0], chunk)]
        self._it = iter(self._batches)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._batches)


def quantize_student(
    model: nn.Module,
    calibration: torch.Tensor | None,
    out_dir: str | Path,
    *,
    name: str = "student",
    calibration_set: str = "transfer set",
    vnni: bool | None | str = "detect",
) -> Int8Result:
    """Write ``<name>.fp32.onnx`` and ``<name>.int8.onnx`` of ``model`` into ``out_dir``.

    ``calibration`` (inputs of the transfer set) calibrates a CNN's activations and is required for
    one (its size must be >= 1); an MLP is quantized dynamically and needs none. Raises
    :class:`ConfigError` naming the key for bad input (a family with no int8 mode, no calibration
    inputs, onnxruntime missing) and :class:`ExportError` when ONNX export or quantization fails.
    """
    require_onnxruntime("student.precision: int8")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    try:
        arch = arch_of(model)
    except Exception as e:
        raise ConfigError(f"student.family: not a gped_search student ({one_line(e)}); int8 needs mlp or cnn") from e
    mode = MODES.get(arch.family)
    if mode is None:
        raise ConfigError(f"student.family: {arch.family!r} cannot be quantized to int8; supported: {', '.join(MODES)}")
    if mode == "static_qdq" and (calibration is None or calibration.shape[0] < 1):
        raise ConfigError("student.calibration_size: a CNN's static int8 quantization needs >= 1 calibration input")
    vnni = cpu_vnni() if vnni == "detect" else vnni
    reduce_range = _needs_reduce_range(vnni)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out_dir / f"{name}.fp32.onnx", out_dir / f"{name}.int8.onnx"
    was_training = model.training
    net = model.eval()
    dev = next(net.parameters()).device
    example = torch.rand(8, *arch.in_shape, generator=torch.Generator().manual_seed(0))  # the same file every time
    try:
        if dev.type != "cpu":
            import copy

            net = copy.deepcopy(model).cpu().eval()
        dynamic, _ = write_onnx(net, example.cpu().float(), fp32, arch.head_names)
        strip_debug(fp32)
    finally:
        model.train(was_training)
    try:
        with _quiet():
            if mode == "dynamic":
                quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, reduce_range=reduce_range, per_channel=False)
            else:
                quantize_static(
                    fp32,
                    int8,
                    _Reader("x", calibration.detach().cpu().float()),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=_head_nodes(fp32),
                )
    except Exception as e:
        raise ExportError(f"int8 quantization failed ({one_line(e)})") from e
    static = mode == "static_qdq"
    atype = "uint8 (static, MinMax calibration)" if static else "uint8 (dynamic, per call)"
    n_cal = int(calibration.shape[0]) if static else 0
    return Int8Result(
        path=int8,
        fp32_path=fp32,
        mode=mode,
        reduce_range=reduce_range,
        vnni=vnni,
        weight_type="int8",
        activation_type=atype,
        per_channel=static,
        calibration_size=int(n_cal),
        calibration_set=calibration_set if n_cal else "none (dynamic quantization)",
        bytes=int8.stat().st_size,
        fp32_bytes=fp32.stat().st_size,
        dynamic_batch=bool(dynamic),
    )
