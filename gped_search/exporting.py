"""Export a trained student for use outside this package, with a model card and a verified reload.

:func:`export_student` writes, into one folder:

* ``student.pt``   -- the self-describing weights-only checkpoint of :mod:`gped_search.checkpoints`
  (needs ``gped_search`` to rebuild the network);
* ``student.pt2``  -- a ``torch.export`` program (batch dimension dynamic where export allows it);
  it loads with plain PyTorch: ``torch.export.load(path).module()(x)``;
* ``student.onnx`` -- on request, through ``torch.onnx.export`` (needs the optional ``onnx`` and
  ``onnxscript`` packages);
* ``model_card.json`` / ``model_card.md`` -- architecture, heads and their meaning, input and
  preprocessing, metrics, cost, study/trial, files with sha256, verification results and how to
  load each file.

Files are first written to a staging folder inside ``out_dir``; every one is reloaded and its
outputs compared with the in-memory model (max abs difference per head <= ``atol``) before it is
moved into place, so a failed export leaves no half-verified artefacts behind. Every failure is an
:class:`ExportError` with a one-line message.
"""

from __future__ import annotations

import copy
import datetime as _dt
import importlib.util
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from gped_search.checkpoints import CheckpointError, _plain, load_checkpoint, save_checkpoint, sha256_of
from gped_search.data.recipe import input_recipe, reproduce_script
from gped_search.errors import ExportError  # noqa: F401  (raised here; re-exported)
from gped_search.modelcard import HEAD_MEANINGS, MUTUAL_INFORMATION, card_markdown, heads_of, load_snippets
from gped_search.models.nets import Arch, arch_of
from gped_search.quant.onnx import ONNX_HINT, ort_missing
from gped_search.quant.onnx import onnx_missing as _onnx_missing
from gped_search.quant.onnx import write_onnx as _write_onnx

__all__ = ["ExportError", "FORMATS", "FILE_NAMES", "HEAD_MEANINGS", "export_student", "verify_pt2"]

FORMATS = ("checkpoint", "pt2", "onnx", "onnx-int8")
FILE_NAMES = {
    "checkpoint": "student.pt",
    "pt2": "student.pt2",
    "onnx": "student.onnx",
    "onnx-int8": "student.int8.onnx",
}
REPRO_SCRIPT = "reproduce_accuracy.py"
"""Written next to the card: rebuilds the test set and recomputes the card's test accuracy (plain torch)."""
CARD_FORMAT = "gped-search-model-card"
CARD_VERSION = 1


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {(lines[0] if lines else '')[:200]}"


def _as_tuple(out) -> tuple[torch.Tensor, ...]:
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
        raise ExportError(f"{path}: cannot load the exported program ({_one_line(e)})") from e
    try:
        with torch.no_grad():
            got = _as_tuple(program.module()(x))
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"{path}: the exported program failed on input {tuple(x.shape)} ({_one_line(e)})") from e
    diff = max(_max_abs_diffs(got, _as_tuple(expected), str(path)), default=0.0)
    if atol is not None and not diff <= atol:
        raise ExportError(f"{path}: outputs differ from the model by {diff:.3g} > atol {atol:.3g}")
    return diff


# --------------------------------------------------------------------------------------- writers


def _export_program(model: nn.Module, x: torch.Tensor) -> tuple[torch.export.ExportedProgram, bool, str]:
    """``torch.export`` with a dynamic batch dimension, falling back to static shapes."""
    try:
        batch = torch.export.Dim("batch", min=1)
        ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
        return ep, True, "batch dimension dynamic (min 1)"
    except Exception as e:
        reason = f"dynamic batch export failed ({_one_line(e)}); static batch {x.shape[0]}"
    try:
        return torch.export.export(model, (x,)), False, reason
    except Exception as e:
        raise ExportError(f"torch.export failed ({_one_line(e)})") from e


def _verify_onnx(path: Path, x: torch.Tensor, expected: Sequence[torch.Tensor]) -> float | None:
    """Max abs diff through onnxruntime, or ``None`` when onnxruntime is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.detach().cpu().numpy()})
    except Exception as e:
        raise ExportError(f"{path}: onnxruntime cannot run the exported model ({_one_line(e)})") from e
    return max(_max_abs_diffs([torch.from_numpy(g) for g in got], expected, str(path)), default=0.0)


# ------------------------------------------------------------------------------------ model card


def _resolve(model_or_path, meta: dict) -> tuple[nn.Module, dict]:
    if isinstance(model_or_path, nn.Module):
        return model_or_path, dict(meta)
    try:
        model, ck_meta = load_checkpoint(model_or_path)
    except CheckpointError as e:
        raise ExportError(str(e)) from e
    merged = {k: ck_meta.get(k) for k in ("config", "metrics", "pruning") if ck_meta.get(k) is not None}
    merged.update({k: v for k, v in (ck_meta.get("extra") or {}).items() if k not in merged})
    merged.update(meta)
    return model, merged


def _portable(config):
    """The study settings without what belongs to this machine (folders, storage URLs with passwords)."""
    if not isinstance(config, dict):
        return config
    out = {k: v for k, v in config.items() if k != "report_dir"}
    if isinstance(out.get("data"), dict):
        out["data"] = {k: v for k, v in out["data"].items() if k != "root"}
    if isinstance(out.get("search"), dict):
        out["search"] = {k: v for k, v in out["search"].items() if k != "storage"}
    return out


def _cost(model: nn.Module, x: torch.Tensor, meta: dict):
    if meta.get("cost") is not None:
        return meta["cost"]
    try:
        from gped_search.metrics.cost import cost_figures

        return cost_figures(model, x)
    except (RuntimeError, ValueError, TypeError) as e:  # cost figures are informative only: say why they're missing
        import logging

        logging.getLogger(__name__).warning(
            "export: no cost figures for the card (%s: %s)", type(e).__name__, str(e).splitlines()[0][:200]
        )
        return None


def _check_request(formats, meta: dict) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = (formats,)
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown export format(s) {unknown or list(formats)}; choose from {list(FORMATS)}")
    if not isinstance(meta, dict):
        raise ExportError(f"meta must be a dict, got {type(meta).__name__}")
    if "onnx" in formats and _onnx_missing():
        raise ExportError(ONNX_HINT)
    if "onnx-int8" in formats and ort_missing():
        raise ExportError(f"--format onnx-int8 needs {', '.join(ort_missing())}: pip install gped-search[onnx]")
    return formats


def _example(arch: Arch, dtype: torch.dtype, example: torch.Tensor | None) -> tuple[torch.Tensor, str]:
    """The verification batch: ``example``, else 8 seeded uniform [0, 1] inputs of the model's shape."""
    if example is None:
        gen = torch.Generator().manual_seed(0)
        return torch.rand(8, *arch.in_shape, generator=gen, dtype=dtype), "8 seeded uniform [0, 1] random inputs"
    x = example.detach().cpu().to(dtype)
    if tuple(x.shape[1:]) != tuple(arch.in_shape) or x.shape[0] < 1:
        raise ExportError(f"example has shape {tuple(x.shape)}, expected (N, {', '.join(map(str, arch.in_shape))})")
    return x, "the given example batch"


@dataclass
class _Written:
    """What writing the formats left: max abs differences on reload, dynamic batch, notes per format."""

    diffs: dict[str, float | None] = field(default_factory=dict)
    dynamic: bool | None = None
    notes: dict[str, str] = field(default_factory=dict)
    int8: dict | None = None  # the card's quantization section (onnx-int8)


def _write_formats(
    model: nn.Module,
    x: torch.Tensor,
    expected,
    stage: Path,
    formats,
    meta: dict,
    ck_extra: dict,
    atol: float,
    int8_data: tuple = (None, None, 0.5),
) -> _Written:
    """Write each format into ``stage`` and reload it against the model's outputs (``atol``; int8:
    ``int8_data`` = (calibration inputs, (test x, test y), its atol from fp32 over the test set))."""
    w = _Written()
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
                raise ExportError(f"checkpoint: {_one_line(e)}") from e
            with torch.no_grad():
                got = _as_tuple(loaded(x.to(next(loaded.parameters()).dtype)))
            w.diffs[fmt] = max(_max_abs_diffs(got, expected, FILE_NAMES[fmt]), default=0.0)
        elif fmt == "pt2":
            program, w.dynamic, w.notes[fmt] = _export_program(model, x)
            try:
                torch.export.save(program, str(path))
            except Exception as e:
                raise ExportError(f"cannot save the exported program ({_one_line(e)})") from e
            w.diffs[fmt] = verify_pt2(path, x, expected)
            if w.dynamic:  # the batch dimension really is free: check a batch of one too
                with torch.no_grad():
                    one = _as_tuple(model(x[:1]))
                w.diffs["pt2_batch1"] = verify_pt2(path, x[:1], one)
        else:
            _, w.notes[fmt] = _write_onnx(model, x, path, arch_of(model).head_names)
            w.diffs[fmt] = _verify_onnx(path, x, expected)
        bad = {k: v for k, v in w.diffs.items() if v is not None and not v <= atol}
        if bad:
            k, v = next(iter(bad.items()))
            raise ExportError(f"{k}: reloaded outputs differ from the model by {v:.3g} > atol {atol:.3g}")
    return w


def _card(
    model: nn.Module,
    x: torch.Tensor,
    x_desc: str,
    w: _Written,
    files: dict,
    recipe: dict,
    meta: dict,
    cost,
    extra: dict,
    atol: float,
) -> dict:
    """The model card as plain data (``model_card.json``)."""
    arch, dtype = arch_of(model), next(model.parameters()).dtype
    derived = [MUTUAL_INFORMATION] if {"predictive", "expected_entropy"} <= set(arch.head_names) else []
    batch = (
        "dynamic (any N >= 1)"
        if w.dynamic or w.dynamic is None
        else f"static: the .pt2 program expects N = {x.shape[0]}"
    )
    card = {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "torch_version": torch.__version__,
        "study": {
            "name": meta.get("study_name", meta.get("study")),
            "trial_number": meta.get("trial_number", meta.get("trial")),
        },
        "architecture": {
            "description": arch.describe(),
            "arch": arch.to_dict(),
            "n_params": sum(p.numel() for p in model.parameters()),
        },
        "heads": heads_of(arch),
        "derived": derived,
        "input": {"shape": ["N", *arch.in_shape], "dtype": str(dtype).removeprefix("torch."), **recipe, "batch": batch},
        "metrics": meta.get("metrics"),
        "cost": cost,
        "config": meta.get("config"),
        "pruning": meta.get("pruning"),
        "extra": extra or None,
        "files": files,
        "verification": {
            "atol": atol,
            "batch": int(x.shape[0]),
            "input": x_desc,
            "max_abs_diff": w.diffs,
            "passed": True,
        },
        "dynamic_batch": w.dynamic,
    }
    if w.int8 is not None:
        card["quantization"] = w.int8
    try:
        return _plain(card, "card")
    except TypeError as e:
        raise ExportError(f"model card: {_one_line(e)}") from e


def _remove_stale(out_dir: Path, written: list[str]) -> list[str]:
    """Remove the files an earlier export wrote into ``out_dir`` that this one did not (a ``student.onnx``
    of another model beside a new card). Only the names the exporter itself writes are touched."""
    ours = {*FILE_NAMES.values(), "model_card.json", "model_card.md", REPRO_SCRIPT}
    stale = sorted(n for n in ours - set(written) if (out_dir / n).is_file())
    for n in stale:
        (out_dir / n).unlink()
    return stale


def export_student(
    model_or_checkpoint_path: nn.Module | str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = ("checkpoint", "pt2"),
    *,
    meta: dict,
    example: torch.Tensor | None = None,
    atol: float = 1e-5,
    calibration: torch.Tensor | None = None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    int8_atol: float = 0.5,
) -> dict:
    """Write the requested ``formats`` plus ``model_card.json``/``.md`` into ``out_dir``; verify each.

    ``meta`` (plain data) may hold ``config``, ``metrics``, ``pruning``, ``cost`` (else computed),
    ``study_name`` (or ``study``), ``trial_number`` (or ``trial``); other keys are kept under
    ``extra``. ``example`` is the verification batch (default: 8 seeded uniform [0, 1] images of
    the model's input shape). ``onnx-int8`` quantizes the student (:mod:`gped_search.quant`) with
    ``calibration`` (transfer-set inputs; a CNN needs them) and states its max abs deviation from the
    fp32 student (at most ``int8_atol``) and its accuracy on ``test`` (x, y) in the card, whose
    ``reproduce_accuracy.py`` then needs only onnxruntime and numpy. Returns ``{"out_dir", "files", "sha256", "verification",
    "dynamic_batch", "card"}``; raises :class:`ExportError` (nothing moved into ``out_dir``) when a
    file cannot be written or reloads with a max abs difference above ``atol``. Everything is
    written into a staging folder first and moved into ``out_dir`` only once verified; then the files an
    earlier export left there that this one did not write (only names the exporter writes, e.g.
    ``student.onnx``) are removed and listed under ``"removed_stale"``.
    """
    formats = _check_request(formats, meta)
    src, meta = _resolve(model_or_checkpoint_path, meta)
    if "config" in meta:
        meta["config"] = _portable(meta["config"])
    try:
        model = copy.deepcopy(src).cpu().eval()
        arch = arch_of(model)
    except Exception as e:
        raise ExportError(f"not a gped_search student network ({_one_line(e)})") from e
    x, x_desc = _example(arch, next(model.parameters()).dtype, example)
    with torch.no_grad():
        expected = _as_tuple(model(x))
    cost = _cost(model, x, meta)
    known = {"config", "metrics", "pruning", "cost", "study_name", "study", "trial_number", "trial"}
    extra = {k: v for k, v in meta.items() if k not in known}
    ck_extra = {
        "study_name": meta.get("study_name", meta.get("study")),
        "trial_number": meta.get("trial_number", meta.get("trial")),
        "cost": cost,
        **extra,
    }

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        w = _write_formats(model, x, expected, stage, formats, meta, ck_extra, atol, (calibration, test, int8_atol))
        files = {
            fmt: {
                "name": FILE_NAMES[fmt],
                "bytes": (stage / FILE_NAMES[fmt]).stat().st_size,
                "sha256": sha256_of(stage / FILE_NAMES[fmt]),
                "load": load_snippets(arch)[fmt],
                "note": w.notes.get(fmt, ""),
            }
            for fmt in formats
        }
        recipe = input_recipe(meta.get("config"))
        script = (
            reproduce_script(meta.get("config"), arch.head_names.index("predictive"))
            if "predictive" in arch.head_names and ("pt2" in formats or "onnx" in formats)
            else None
        )
        if w.int8 is not None and "predictive" in arch.head_names and test is not None:
            from gped_search.quant.export import int8_script

            hw = tuple(arch.in_shape[1:])
            script = int8_script(meta.get("config"), arch.head_names.index("predictive"), test[0].shape[0], hw)
        if script is not None:
            (stage / REPRO_SCRIPT).write_text(script, encoding="utf-8")
            what = (
                "quantization.test_student_acc"
                if w.int8 is not None and test is not None
                else "metrics.test_student_acc"
            )
            recipe["reproduce"] = f"python {REPRO_SCRIPT} --data-root PATH  (recomputes {what})"
        card = _card(model, x, x_desc, w, files, recipe, meta, cost, extra, atol)
        (stage / "model_card.json").write_text(
            json.dumps(card, indent=2, allow_nan=True, default=str) + "\n", encoding="utf-8"
        )
        (stage / "model_card.md").write_text(card_markdown(card), encoding="utf-8")
        names = [FILE_NAMES[f] for f in formats] + ["model_card.json", "model_card.md"]
        names += [REPRO_SCRIPT] if script is not None else []
        for name in names:
            os.replace(stage / name, out_dir / name)
        stale = _remove_stale(out_dir, names)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {
        "out_dir": out_dir,
        "removed_stale": stale,
        "files": {
            **{f: out_dir / FILE_NAMES[f] for f in formats},
            "card_json": out_dir / "model_card.json",
            "card_md": out_dir / "model_card.md",
            **({"reproduce": out_dir / REPRO_SCRIPT} if script is not None else {}),
        },
        "sha256": {f: files[f]["sha256"] for f in formats},
        "verification": w.diffs,
        "dynamic_batch": w.dynamic,
        "quantization": w.int8,
        "card": card,
    }
