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
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from gped_search.checkpoints import CheckpointError, load_checkpoint
from gped_search.data.recipe import input_recipe, reproduce_script
from gped_search.errors import ExportError, one_line  # noqa: F401  (ExportError: raised here; re-exported)
from gped_search.export_files import FILE_NAMES, as_tuple, verify_pt2, write_formats
from gped_search.export_place import move_into_place, write_card
from gped_search.files import sha256_of
from gped_search.modelcard import HEAD_MEANINGS, build_card, load_snippets
from gped_search.models.nets import Arch, arch_of
from gped_search.quant.onnx import ONNX_HINT, ort_missing
from gped_search.quant.onnx import onnx_missing as _onnx_missing

__all__ = ["ExportError", "FORMATS", "FILE_NAMES", "HEAD_MEANINGS", "export_student", "verify_pt2"]

FORMATS = ("checkpoint", "pt2", "onnx", "onnx-int8")
REPRO_SCRIPT = "reproduce_accuracy.py"
"""Written next to the card: rebuilds the test set and recomputes the card's test accuracy (with an ONNX
file: onnxruntime and numpy only; else plain torch)."""
EXPORTER_NAMES = frozenset({*FILE_NAMES.values(), "model_card.json", "model_card.md", REPRO_SCRIPT})
"""Every file name an export writes: the only names an export into a used folder removes."""


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


def _script(arch: Arch, formats, config: dict | None, int8: bool, test) -> tuple[str | None, str]:
    """The accuracy script and the card figure it checks. With an ONNX file it needs only onnxruntime and
    numpy (scikit-learn for digits): the int8 file's accuracy when quantized against a test set, else
    ``student.onnx``'s; with only ``student.pt2`` it needs plain torch."""
    if "predictive" not in arch.head_names:
        return None, ""
    head, hw = arch.head_names.index("predictive"), tuple(arch.in_shape[1:])
    if int8 and test is not None:
        from gped_search.quant.export import int8_script

        return int8_script(config, head, test[0].shape[0], hw), "quantization.test_student_acc"
    if "onnx" in formats:
        from gped_search.quant.export import ort_script

        return ort_script(config, head, hw, file=FILE_NAMES["onnx"]), "metrics.test_student_acc"
    if "pt2" in formats:
        return reproduce_script(config, head), "metrics.test_student_acc"
    return None, ""


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
    model, arch, meta = _load_student(model_or_checkpoint_path, meta)
    x, x_desc = _example(arch, next(model.parameters()).dtype, example)
    with torch.no_grad():
        expected = as_tuple(model(x))
    cost = _cost(model, x, meta)
    extra, ck_extra = _extras(meta, cost)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        w = write_formats(model, x, expected, stage, formats, meta, ck_extra, atol, (calibration, test, int8_atol))
        files = _file_entries(stage, formats, arch, w)
        recipe, script = _write_script(stage, arch, formats, meta.get("config"), w.int8 is not None, test)
        card = build_card(model, x, x_desc, w, files, recipe, meta, cost, extra, atol)
        write_card(stage, card)
        names = [FILE_NAMES[f] for f in formats] + ["model_card.json", "model_card.md"]
        names += [REPRO_SCRIPT] if script is not None else []
        stale = _move_into_place(stage, out_dir, names)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return _outcome(out_dir, formats, files, w, card, stale, script is not None)


def _load_student(model_or_path, meta: dict) -> tuple[nn.Module, Arch, dict]:
    """The student (a CPU copy in eval mode), its architecture and the merged, portable ``meta``."""
    src, meta = _resolve(model_or_path, meta)
    if "config" in meta:
        meta["config"] = _portable(meta["config"])
    try:
        model = copy.deepcopy(src).cpu().eval()
        arch = arch_of(model)
    except Exception as e:
        raise ExportError(f"not a gped_search student network ({one_line(e)})") from e
    return model, arch, meta


def _extras(meta: dict, cost) -> tuple[dict, dict]:
    """The card's ``extra`` (meta keys it has no place for) and the checkpoint's ``extra``."""
    known = {"config", "metrics", "pruning", "cost", "study_name", "study", "trial_number", "trial"}
    extra = {k: v for k, v in meta.items() if k not in known}
    ck_extra = {
        "study_name": meta.get("study_name", meta.get("study")),
        "trial_number": meta.get("trial_number", meta.get("trial")),
        "cost": cost,
        **extra,
    }
    return extra, ck_extra


def _file_entries(stage: Path, formats, arch: Arch, w) -> dict:
    """The card's entry for each written file: name, bytes, sha256, how to load it and a note."""
    return {
        fmt: {
            "name": FILE_NAMES[fmt],
            "bytes": (stage / FILE_NAMES[fmt]).stat().st_size,
            "sha256": sha256_of(stage / FILE_NAMES[fmt]),
            "load": load_snippets(arch)[fmt],
            "note": w.notes.get(fmt, ""),
        }
        for fmt in formats
    }


def _write_script(stage: Path, arch: Arch, formats, config, int8: bool, test) -> tuple[dict, str | None]:
    """The input recipe, with the accuracy script (written into ``stage``) and what it recomputes, if any."""
    recipe = input_recipe(config)
    script, what = _script(arch, formats, config, int8, test)
    if script is not None:
        (stage / REPRO_SCRIPT).write_text(script, encoding="utf-8")
        recipe["reproduce"] = f"python {REPRO_SCRIPT} --data-root PATH  (recomputes {what})"
    return recipe, script


def _move_into_place(stage: Path, out_dir: Path, names: list[str]) -> list[str]:
    """Move the verified ``names`` from ``stage`` into ``out_dir``; remove (and return) an earlier export's others."""
    return move_into_place(stage, out_dir, names, EXPORTER_NAMES)


def _outcome(out_dir: Path, formats, files: dict, w, card: dict, stale: list[str], script: bool) -> dict:
    """What :func:`export_student` returns: the files written, their hashes, the verification and the card."""
    return {
        "out_dir": out_dir,
        "removed_stale": stale,
        "files": {
            **{f: out_dir / FILE_NAMES[f] for f in formats},
            "card_json": out_dir / "model_card.json",
            "card_md": out_dir / "model_card.md",
            **({"reproduce": out_dir / REPRO_SCRIPT} if script else {}),
        },
        "sha256": {f: files[f]["sha256"] for f in formats},
        "verification": w.diffs,
        "dynamic_batch": w.dynamic,
        "quantization": w.int8,
        "card": card,
    }
