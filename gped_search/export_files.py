"""Writing an export's files and checking each reloads to the student's outputs.

:func:`write_formats` writes every requested format into a staging folder and reloads it against the
in-memory model (max abs difference per head <= ``atol``); :func:`verify_pt2` is the ``torch.export``
check on its own. Every failure is an :class:`ExportError` with a one-line message.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from gped_search.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from gped_search.errors import ExportError, one_line
from gped_search.models.nets import arch_of
from gped_search.quant.onnx import write_onnx as _write_onnx

__all__ = ["FILE_NAMES", "Written", "as_tuple", "verify_pt2", "write_formats"]

FILE_NAMES = {
    "checkpoint": "student.pt",
    "pt2": "student.pt2",
    "onnx": "student.onnx",
    "onnx-int8": "student.int8.onnx",
}


def as_tuple(out) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)):
        return tuple(out)
    raise ExportError(f"model output is a {type(out).__name__}, expected a tuple of tensors")


def _max_abs_diffs(got: Sequence[torch.Tensor], expected: Sequence[torch.Tensor], what: str) -> list[float]:
    if len(got) != len(expected):
        raise ExportError(f"{what}: {len(got)} outputs, expected {len(expected)}")
    diffs = []
    for i, (a, b) in enumerate(zip(got, expected)):
        a = torch.as_tensor(a).detach().cpu()
        b = torch.as_tensor(b).detach().cpu()
        if a.shape != b.shape:
            raise ExportError(f"{what}: output {i} has shape {tuple(a.shape)}, expected {tuple(b.shape)}")
        d = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
        diffs.append(float("inf") if math.isnan(d) else d)
    return diffs


def verify_pt2(
    path: str | os.PathLike,
    x: torch.Tensor,
    expected: Sequence[torch.Tensor],
    *,
    atol: float | None = None,
) -> float:
    """Load a ``torch.export`` program from ``path``, run it on ``x`` and return the max abs
    difference to ``expected`` over all outputs. Raises :class:`ExportError` when the file does not
    load or run, the outputs do not line up, or (with ``atol``) the difference exceeds ``atol``."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    try:
        program = torch.export.load(str(path))
    except Exception as e:
        raise ExportError(f"{path}: cannot load the exported program ({one_line(e)})") from e
    try:
        with torch.no_grad():
            got = as_tuple(program.module()(x))
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"{path}: the exported program failed on input {tuple(x.shape)} ({one_line(e)})") from e
    diff = max(_max_abs_diffs(got, as_tuple(expected), str(path)), default=0.0)
    if atol is not None and not diff <= atol:
        raise ExportError(f"{path}: outputs differ from the model by {diff:.3g} > atol {atol:.3g}")
    return diff


def _export_program(model: nn.Module, x: torch.Tensor) -> tuple[torch.export.ExportedProgram, bool, str]:
    """``torch.export`` with a dynamic batch dimension, falling back to static shapes."""
    try:
        batch = torch.export.Dim("batch", min=1)
        ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
        return ep, True, "batch dimension dynamic (min 1)"
    except Exception as e:
        reason = f"dynamic batch export failed ({one_line(e)}); static batch {x.shape[0]}"
    try:
        return torch.export.export(model, (x,)), False, reason
    except Exception as e:
        raise ExportError(f"torch.export failed ({one_line(e)})") from e


def _verify_onnx(path: Path, x: torch.Tensor, expected: Sequence[torch.Tensor]) -> float | None:
    """Max abs diff through onnxruntime, or ``None`` when onnxruntime is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.detach().cpu().numpy()})
    except Exception as e:
        raise ExportError(f"{path}: onnxruntime cannot run the exported model ({one_line(e)})") from e
    return max(_max_abs_diffs([torch.from_numpy(g) for g in got], expected, str(path)), default=0.0)


@dataclass
class Written:
    """What writing the formats left: max abs differences on reload, dynamic batch, notes per format."""

    diffs: dict[str, float | None] = field(default_factory=dict)
    dynamic: bool | None = None
    notes: dict[str, str] = field(default_factory=dict)
    int8: dict | None = None  # the card's quantization section (onnx-int8)


def write_formats(
    model: nn.Module,
    x: torch.Tensor,
    expected,
    stage: Path,
    formats,
    meta: dict,
    ck_extra: dict,
    atol: float,
    int8_data: tuple = (None, None, 0.5),
) -> Written:
    """Write each format into ``stage`` and reload it against the model's outputs (``atol``; int8:
    ``int8_data`` = (calibration inputs, (test x, test y), its atol from fp32 over the test set))."""
    w = Written()
    for fmt in formats:
        path = stage / FILE_NAMES[fmt]
        if fmt == "onnx-int8":
            from gped_search.quant.export import write_int8

            calibration, test, int8_atol = int8_data
            w.int8 = write_int8(model, stage, calibration, test, x)
            w.int8["atol"] = int8_atol
            dev = max(w.int8["max_abs_deviation_from_fp32"].values(), default=0.0)
            if not dev <= int8_atol:
                raise ExportError(f"onnx-int8: outputs differ from the fp32 student by {dev:.3g} > {int8_atol:.3g}")
            w.notes[fmt] = f"int8 ({w.int8['mode']}); max abs deviation from fp32 {dev:.3g}"
            continue
        if fmt == "checkpoint":
            try:
                save_checkpoint(
                    path,
                    model,
                    config=meta.get("config"),
                    metrics=meta.get("metrics"),
                    pruning=meta.get("pruning"),
                    extra=ck_extra,
                )
                loaded, _ = load_checkpoint(path)
            except (TypeError, CheckpointError) as e:
                raise ExportError(f"checkpoint: {one_line(e)}") from e
            with torch.no_grad():
                got = as_tuple(loaded(x.to(next(loaded.parameters()).dtype)))
            w.diffs[fmt] = max(_max_abs_diffs(got, expected, FILE_NAMES[fmt]), default=0.0)
        elif fmt == "pt2":
            program, w.dynamic, w.notes[fmt] = _export_program(model, x)
            try:
                torch.export.save(program, str(path))
            except Exception as e:
                raise ExportError(f"cannot save the exported program ({one_line(e)})") from e
            w.diffs[fmt] = verify_pt2(path, x, expected)
            if w.dynamic:  # the batch dimension really is free: check a batch of one too
                with torch.no_grad():
                    one = as_tuple(model(x[:1]))
                w.diffs["pt2_batch1"] = verify_pt2(path, x[:1], one)
        else:
            _, w.notes[fmt] = _write_onnx(model, x, path, arch_of(model).head_names)
            w.diffs[fmt] = _verify_onnx(path, x, expected)
        bad = {k: v for k, v in w.diffs.items() if v is not None and not v <= atol}
        if bad:
            k, v = next(iter(bad.items()))
            raise ExportError(f"{k}: reloaded outputs differ from the model by {v:.3g} > atol {atol:.3g}")
    return w
