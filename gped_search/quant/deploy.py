"""A trial's student as deployed: int8 (or fp32) ONNX, scored and timed through ONNX Runtime.

:func:`deployed_record` is called by :func:`gped_search.engine.student_record` when a study may
quantize (``student.precision`` / ``search.space.precision``) or times in ONNX Runtime
(``search.latency_backend: onnxruntime``). For an int8 trial, the quality metrics (``kl``,
``student_acc``, ``expected_entropy_mae``, ``ood_auroc``, ... and their ``test_`` twins) are
re-measured on the quantized model through an ONNX Runtime session, the fp32 figures are kept as
``fp32_<metric>``, and ``bytes`` is the int8 file's size. The ONNX files live in a temporary
folder: quantization is deterministic, so an export re-creates them from the checkpoint.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from gped_search.config.space import precisions
from gped_search.models.nets import arch_of
from gped_search.quant.int8 import calibration_inputs, quantize_student, require_onnxruntime
from gped_search.quant.onnx import OrtStudent, measure_latency_ort, strip_debug, write_onnx

if TYPE_CHECKING:
    from gped_search.config import StudyConfig

__all__ = ["needs_onnx", "check_study", "deployed_record", "onnx_files", "FP32_KEYS"]

FP32_KEYS = ("kl", "kl_st", "prob_mae", "student_acc", "student_nll", "student_ece", "ood_auroc", "ood_aupr")
"""Besides every ``<head>_mae`` / ``_bias`` and ``mi_*``: quality figures kept as ``fp32_<name>``."""


def needs_onnx(cfg: StudyConfig) -> bool:
    """Whether a study's trials make ONNX files (int8 possible, or ONNX Runtime latency)."""
    return "int8" in precisions(cfg) or cfg.search.latency_backend.value == "onnxruntime"


def check_study(cfg: StudyConfig) -> None:
    """One-line :class:`ConfigError` naming the key and the extra when a study needs onnxruntime
    (int8 students, ONNX Runtime latency) and it is not installed: call before sampling a teacher."""
    if "int8" in precisions(cfg):
        key = "search.space.precision" if "precision" in (cfg.search.space or {}) else "student.precision"
        require_onnxruntime(f"{key}: int8")
    if cfg.search.latency_backend.value == "onnxruntime":
        require_onnxruntime("search.latency_backend: onnxruntime")


def onnx_files(models: dict, precision: dict, cfg: StudyConfig, folder: str | Path) -> dict:
    """Each model's ONNX file as its trial deployed it (int8 quantized as in the trial, else fp32), for
    re-timing a front (``search.study.calibrate_front``): ``{key: path}``."""
    transfer = None
    out = {}
    for key, model in models.items():
        arch = arch_of(model)
        if precision.get(key) == "int8":
            calib = None
            if arch.family == "cnn":
                if transfer is None:
                    from gped_search.data import make_bundle

                    transfer = make_bundle(cfg.data, cfg.seed, "cpu").transfer
                calib = calibration_inputs(transfer, cfg.student.calibration_size, cfg.distill.transfer_size)
            out[key] = quantize_student(model, calib, folder, name=f"trial{key}").path
        else:
            out[key] = Path(folder) / f"trial{key}.fp32.onnx"
            _fp32_file(model, out[key])
    return out


def _fp32_file(model, path: Path) -> int:
    """The fp32 ONNX file of ``model`` as :func:`quantize_student` writes it (same example input,
    debug metadata stripped); returns its size."""
    arch = arch_of(model)
    net = copy.deepcopy(model).cpu().eval()
    x = torch.rand(8, *arch.in_shape, generator=torch.Generator().manual_seed(0))
    write_onnx(net, x, path, arch.head_names)
    return strip_debug(path)


def _kept(name: str) -> bool:
    base = name.removeprefix("test_")
    return base in FP32_KEYS or base.endswith(("_mae", "_bias"))


def deployed_record(
    model,
    cfg: StudyConfig,
    transfer,
    precision: str,
    rec: dict,
    score: Callable[[object], dict],
    latency_batch: int = 1,
    latency_repeats: int = 30,
) -> dict:
    """The fields that replace or join ``rec`` (the fp32 record) for the deployed student.

    ``score(m)`` measures the quality metrics (selection split and ``test_``) of a model-like ``m``;
    ``transfer`` is the transfer set (calibration inputs for a CNN). Always: ``precision``, ``bytes``
    (serialized ONNX size), ``bytes_onnx_fp32``, ``fp32_<metric>``; with int8 the quantization's
    ``quant_mode``, ``quant_reduce_range``, ``quant_vnni``, ``calibration_size`` and the re-measured
    quality; with ONNX Runtime timing (int8, or ``search.latency_backend: onnxruntime``) the latency
    fields and ``latency_torch_ms`` (the eager figure).
    """
    out: dict = {"precision": precision}
    out.update({f"fp32_{k}": v for k, v in rec.items() if _kept(k) and isinstance(v, (int, float))})
    arch = arch_of(model)
    with tempfile.TemporaryDirectory(prefix="gped-onnx-") as tmp:
        if precision == "int8":
            calib = None
            if arch.family == "cnn":
                calib = calibration_inputs(transfer, cfg.student.calibration_size, cfg.distill.transfer_size)
            res = quantize_student(model, calib, tmp, calibration_set="transfer set")
            path = res.path
            out.update(score(OrtStudent(path, arch)))
            out.update(
                {
                    "bytes": res.bytes,
                    "bytes_onnx_fp32": res.fp32_bytes,
                    "quant_mode": res.mode,
                    "quant_reduce_range": res.reduce_range,
                    "quant_vnni": res.vnni,
                    "calibration_size": res.calibration_size,
                }
            )
        else:
            path = Path(tmp) / "student.fp32.onnx"
            out["bytes"] = out["bytes_onnx_fp32"] = _fp32_file(model, path)
        if precision == "int8" or cfg.search.latency_backend.value == "onnxruntime":
            lat = measure_latency_ort(path, arch.in_shape, batch=latency_batch, repeats=latency_repeats, warmup=5)
            out.update(
                {
                    "latency_torch_ms": rec.get("latency_ms"),
                    "latency_ms": lat["median_ms"],
                    "latency_p10_ms": lat["p10_ms"],
                    "latency_p90_ms": lat["p90_ms"],
                    "latency_device": "cpu",
                    "latency_backend": "onnxruntime",
                }
            )
    return out
