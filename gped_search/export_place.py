"""Putting an export's files into place, shared by a fresh export (:mod:`gped_search.exporting`) and a copy
of a kept one (:mod:`gped_search.search.export_cache`). Imports no torch."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["move_into_place", "write_card"]


def write_card(stage: Path, card: dict) -> None:
    """``model_card.json`` and ``model_card.md`` into ``stage``."""
    from gped_search.modelcard_md import card_markdown

    (stage / "model_card.json").write_text(
        json.dumps(card, indent=2, allow_nan=True, default=str) + "\n", encoding="utf-8"
    )
    (stage / "model_card.md").write_text(card_markdown(card), encoding="utf-8")


def move_into_place(stage: Path, out_dir: Path, names: list[str], ours: Iterable[str]) -> list[str]:
    """Move ``names`` from ``stage`` into ``out_dir``; then remove (and return) the files an earlier export left
    there that this one did not write (say a ``student.onnx`` of another model beside a new card). Only the
    names the exporter itself writes (``ours``) are touched."""
    for name in names:
        os.replace(stage / name, out_dir / name)
    stale = sorted(n for n in set(ours) - set(names) if (out_dir / n).is_file())
    for n in stale:
        (out_dir / n).unlink()
    return stale
