"""What a study's report shows besides its trials table (``report.sections.ReportExtras``): each trial's
learning curve (Optuna intermediate values), the ``downstream`` and ``robustness`` results once those
commands have written them into the study folder, and the pruned students' per-layer costs before and
after pruning (read from their checkpoints: torch is imported only when a student was pruned)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd

from gped_search.report.sections import ReportExtras

from .results import study_path

__all__ = ["report_extras", "pruned_layers", "pruned_trials", "MAX_PRUNED", "CACHE_FILE"]

MAX_PRUNED = 6
"""At most this many pruned students get a per-layer table (front members first, then by trial number)."""
CACHE_FILE = "pruned_layers.csv"
"""The per-layer table as last computed, in the study folder: reused while the same trials are shown."""


def _table(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / name
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None


def report_extras(out_dir: Path, study: optuna.Study, df: pd.DataFrame) -> ReportExtras:
    """The study's extras for its report; ``df`` is its trials frame."""
    curves = {
        t.number: {int(k): float(v) for k, v in sorted(t.intermediate_values.items())}
        for t in study.get_trials(deepcopy=False)
        if t.intermediate_values and t.state.name == "COMPLETE"
    }
    down, rob = out_dir / "downstream", out_dir / "robustness"
    return ReportExtras(
        curves=curves,
        downstream=_table(down, "downstream.csv"),
        downstream_dir=down,
        robustness=_table(rob, "robustness.csv"),
        robustness_dir=rob,
        pruned=pruned_layers(out_dir, df),
    )


def pruned_trials(df: pd.DataFrame) -> list[int]:
    if df.empty or "units_removed" not in df.columns or "checkpoint" not in df.columns:
        return []
    done = df[(df["state"] == "COMPLETE") & (df["units_removed"].fillna(0).astype(float) > 0)]
    if done.empty:
        return []
    front = done["on_front"].astype(bool) if "on_front" in done.columns else pd.Series(False, index=done.index)
    order = done.assign(_front=~front).sort_values(["_front", "number"])
    return [int(n) for n in order["number"].head(MAX_PRUNED)]


def pruned_layers(out_dir: Path, df: pd.DataFrame) -> pd.DataFrame | None:
    """Per Linear / Conv2d layer of each pruned student (at most :data:`MAX_PRUNED`): its shape,
    parameters and MACs before and after pruning. The unpruned network is the checkpoint's architecture
    with the widths its ``pruning.units_before`` records. None when no student was pruned. Kept in
    :data:`CACHE_FILE`, so a report of the same trials needs no torch."""
    numbers = pruned_trials(df)
    if not numbers:
        return None
    cache = out_dir / CACHE_FILE
    if cache.is_file():  # a finished trial's checkpoint never changes: no torch import for a re-run report
        try:
            cached = pd.read_csv(cache)
            if sorted(set(cached["trial"].astype(int))) == sorted(numbers):
                return cached
        except (pd.errors.ParserError, pd.errors.EmptyDataError, KeyError, ValueError):
            pass
    table = _layer_table(out_dir, df, numbers)
    if table is not None:
        try:
            table.to_csv(cache, index=False)
        except OSError:  # a read-only study folder: the report still has the table
            pass
    return table


def _layer_table(out_dir: Path, df: pd.DataFrame, numbers: list[int]) -> pd.DataFrame | None:
    import torch

    from gped_search.checkpoints import CheckpointError, load_checkpoint
    from gped_search.metrics.cost import layer_costs
    from gped_search.models import build

    rows = []
    for n in numbers:
        path = study_path(out_dir, df.loc[df["number"] == n, "checkpoint"].iloc[0])
        if path is None or not path.is_file():
            continue
        try:
            model, meta = load_checkpoint(path, "cpu")
        except CheckpointError:
            continue
        before_units = (meta.get("pruning") or {}).get("units_before")
        arch = model.arch
        if not before_units or len(before_units) != len(arch.channels) + len(arch.hidden):
            continue
        k = len(arch.channels)
        before = build(replace(arch, channels=tuple(before_units[:k]), hidden=tuple(before_units[k:])))
        x = torch.zeros(1, *arch.in_shape)
        after_rows = {r["layer"]: r for r in layer_costs(model, x)}
        for b in layer_costs(before, x):
            a = after_rows.get(b["layer"], {})
            rows.append(
                {
                    "trial": n,
                    "layer": b["layer"],
                    "kind": b["kind"],
                    "shape_before": b["shape"],
                    "shape_after": a.get("shape", "removed"),
                    "params_before": b["params"],
                    "params_after": a.get("params", 0),
                    "macs_before": b["macs"],
                    "macs_after": a.get("macs", 0),
                }
            )
    return pd.DataFrame(rows) if rows else None
