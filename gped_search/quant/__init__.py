"""ONNX and int8 students: the fp32 ONNX writer, ONNX Runtime sessions and latency, quantization."""

from gped_search.quant.int8 import (
    MODES,
    Int8Result,
    calibration_inputs,
    cpu_vnni,
    quantize_student,
    require_onnxruntime,
)
from gped_search.quant.onnx import EXTRA, ONNX_HINT, OrtStudent, measure_latency_ort, session, write_onnx

__all__ = [
    "EXTRA",
    "ONNX_HINT",
    "MODES",
    "Int8Result",
    "OrtStudent",
    "calibration_inputs",
    "cpu_vnni",
    "measure_latency_ort",
    "quantize_student",
    "require_onnxruntime",
    "session",
    "write_onnx",
]
