"""The report's sections beyond the front: learning curves, trial durations, the downstream and
robustness results once run, and the pruned students' per-layer before/after table.

:class:`ReportExtras` holds what a study has besides its trials table (gathered by
``search.report_data``); :func:`build_sections` turns it into :class:`Section` s (text, a table,
figures), which :func:`section_markdown` and :func:`section_html` render. Pure apart from matplotlib.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .figure_cache import png_bytes
from .formatting import format_number

__all__ = ["ReportExtras", "Section", "build_sections", "section_markdown", "section_html", "PRUNE_COLUMNS"]

PRUNE_COLUMNS = (
    "trial",
    "layer",
    "kind",
    "shape_before",
    "shape_after",
    "params_before",
    "params_after",
    "macs_before",
    "macs_after",
)


@dataclass
class ReportExtras:
    """A study's results besides its trials table. ``curves``: trial -> step -> distillation loss;
    ``downstream`` / ``robustness``: the commands' tables and the folder with their figures (relative to
    the report folder when inside it); ``pruned``: per-layer rows (:data:`PRUNE_COLUMNS`)."""

    curves: dict[int, dict[int, float]] = field(default_factory=dict)
    downstream: pd.DataFrame | None = None
    downstream_dir: Path | None = None
    robustness: pd.DataFrame | None = None
    robustness_dir: Path | None = None
    pruned: pd.DataFrame | None = None


@dataclass
class Section:
    """One report section: a heading, sentences, an optional table and figures ``(file name, PNG bytes)``."""

    key: str
    title: str
    text: list[str]
    table: pd.DataFrame | None = None
    figures: list[tuple[str, bytes]] = field(default_factory=list)


def _draw(name: str, make: Callable[[], object]) -> bytes:
    return png_bytes(make())


def _durations_figure(df: pd.DataFrame, title: str):
    from .trial_figures import plot_durations

    return plot_durations(df, title=f"{title}: trial durations")


def _folder_figures(folder: Path | None, prefix: str) -> list[tuple[str, bytes]]:
    if folder is None or not folder.is_dir():
        return []
    return [(f"{prefix}/{p.name}", p.read_bytes()) for p in sorted(folder.glob("*.png"))]


def build_sections(
    extras: ReportExtras,
    df: pd.DataFrame,
    highlight: Mapping[int, str],
    title: str,
    render: Callable[[str, Callable[[], object]], bytes] = _draw,
) -> list[Section]:
    """The sections the study has data for, in the report's order; ``render(name, make)`` gives a figure's
    PNG bytes (e.g. :meth:`~gped_search.report.figure_cache.FigureCache.render`)."""
    out: list[Section] = []
    if extras.curves:
        front = set(df.loc[df["on_front"].astype(bool), "number"].astype(int)) if "on_front" in df else set()

        def curves_figure():
            from .trial_figures import plot_learning_curves

            return plot_learning_curves(extras.curves, front, highlight, title=f"{title}: learning curves")

        curves = render("learning_curves.png", curves_figure)
        n_points = max(len(c) for c in extras.curves.values())
        out.append(
            Section(
                "curves",
                "Learning curves",
                [
                    f"The distillation loss of each trial's student at {n_points} points of its run (stored as "
                    "Optuna intermediate values); front members in colour, the recommended student in black."
                ],
                figures=[("learning_curves.png", curves)],
            )
        )
    if "duration_s" in df.columns and df["duration_s"].notna().any():
        d = df["duration_s"].dropna().astype(float)
        out.append(
            Section(
                "durations",
                "Trial durations",
                [
                    f"{len(d)} finished trials took {d.sum():,.0f} s of wall-clock time in all (median {d.median():.3g} s,"
                    f" longest {d.max():.3g} s); each trial's time is the `duration [s]` column of the trials table."
                ],
                figures=[("durations.png", render("durations.png", lambda: _durations_figure(df, title)))],
            )
        )
    if extras.downstream is not None:
        out.append(
            Section(
                "downstream",
                "Downstream uncertainty (gped-search downstream)",
                [
                    "OOD detection (AUROC of each uncertainty score against the OOD inputs), uncertainty ranking "
                    "and accuracy–rejection of the teacher, front students and a deterministic baseline."
                ],
                table=extras.downstream,
                figures=_folder_figures(extras.downstream_dir, "downstream"),
            )
        )
    if extras.robustness is not None:
        out.append(
            Section(
                "robustness",
                "Adversarial robustness (gped-search robustness)",
                ["Accuracy, predictive entropy and mutual information under FGSM and PGD (L-infinity) attacks."],
                table=extras.robustness,
                figures=_folder_figures(extras.robustness_dir, "robustness"),
            )
        )
    if extras.pruned is not None and len(extras.pruned):
        n = extras.pruned["trial"].nunique()
        out.append(
            Section(
                "pruning",
                "Pruned students, layer by layer",
                [
                    f"Parameters and multiply-accumulates (MACs, one input) of each Linear / Conv2d layer before "
                    f"and after structured pruning, for {n} pruned student{'s' if n > 1 else ''} (front first)."
                ],
                table=extras.pruned[[c for c in PRUNE_COLUMNS if c in extras.pruned.columns]],
            )
        )
    return out


def section_markdown(s: Section) -> list[str]:
    from .formatting import markdown_table

    lines = [f"## {s.title}", "", *s.text, ""]
    if s.table is not None:
        lines += [markdown_table(s.table), ""]
    lines += [f"![{s.title}]({name})" for name, _ in s.figures]
    return [*lines, ""] if s.figures else lines


def section_html(s: Section) -> str:
    e = html.escape
    body = [f'<h2 id="{s.key}">{e(s.title)}</h2>', *[f"<p>{e(t)}</p>" for t in s.text]]
    if s.table is not None:
        table = s.table.to_html(index=False, border=0, classes="t", float_format=format_number)
        body.append(f'<div class="scroll">{table}</div>')
    for name, data in s.figures:
        b = base64.b64encode(data).decode()
        body.append(
            f'<figure><img alt="{e(s.title)}: {e(name)}" src="data:image/png;base64,{b}">'
            f"<figcaption>{e(s.title)}: {e(name)}</figcaption></figure>"
        )
    return "".join(body)
