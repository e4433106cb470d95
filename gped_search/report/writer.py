"""The one writer: a study's tables, figures, ``index.html`` (self-contained) and ``summary.md``.

Everything it writes goes under ``reports/<study>/``: ``trials.csv`` (every trial, with
``on_front``), ``front.csv``, ``trials.parquet`` when pyarrow is present, ``pareto_<x>_vs_<y>.png``
for each pair of objectives, ``hypervolume.png``, ``index.html`` and ``summary.md``.
"""

from __future__ import annotations

import base64
import html
import importlib
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd

from .figure_cache import FigureCache, inputs_digest, png_bytes
from .formatting import (  # noqa: F401
    SORT_JS,
    STYLE,
    caption,
    column_label,
    format_number,
    format_value,
    markdown_table,
    md_pretty,
    pretty_table,
)
from .recommend import (  # noqa: F401  (re-exported)
    KNEE_RULE,
    READABLE_COLUMNS,
    SHOWN_COLUMNS,
    front_columns,
    readable_columns,
    recommendation,
    recommendation_sentence,
    selection_note,
)
from .sections import ReportExtras, build_sections, section_html, section_markdown
from .tables import (
    hypervolume,
    hypervolume_history,
    pareto_front,
    reference_point,
)

__all__ = [
    "save_png",
    "write_report",
    "front_columns",
    "markdown_table",
    "column_label",
    "format_value",
    "KNEE_RULE",
]


def save_png(fig, path: Path) -> str:
    data = png_bytes(fig)
    path.write_bytes(data)
    return base64.b64encode(data).decode()


def write_report(
    df: pd.DataFrame,
    objectives: Mapping[str, str],
    out_dir: str | Path,
    *,
    title: str,
    settings: dict | None = None,
    teacher: dict | None = None,
    compare: Mapping[str, pd.DataFrame] | None = None,
    extra: dict | None = None,
    notes: list[str] | None = None,
    importances: Mapping[str, Mapping[str, float]] | None = None,
    exported: Mapping[int, str] | None = None,
    export_command: str | None = None,
    extras: ReportExtras | None = None,
) -> dict:
    """Write the study's report; returns the written paths, the front and the summary.

    The report opens with the data the front was selected on and the recommended student (the knee,
    :data:`KNEE_RULE`) with the command that exports it; the knee and ``exported`` trials (number ->
    where) are starred in every plot and highlighted in the tables. ``notes`` are sentences for the
    Notes section, ``extra`` machine-readable figures for ``summary.json``, ``importances`` maps an
    objective to Optuna's parameter importances for it. ``extras`` (:class:`ReportExtras`) adds learning
    curves, the downstream and robustness results and the pruned students' per-layer table; trial
    durations come from the table's ``duration_s``.
    """
    r = _Report(
        df.copy(),
        dict(objectives),
        Path(out_dir),
        title,
        settings,
        teacher,
        compare,
        extra or {},
        notes or [],
        importances or {},
        {int(k): v for k, v in (exported or {}).items()},
        export_command,
        extras or ReportExtras(),
    )
    r.out.mkdir(parents=True, exist_ok=True)
    r.write_tables()
    r.write_figures()
    r.write_summary()
    r.write_markdown()
    r.write_html()
    return {"written": r.written, "front": r.front, "summary": r.summary}


def _lazy(module: str, name: str):
    """A plotting function imported on first call: a report whose figures are all current imports no matplotlib."""
    return lambda *a, **k: getattr(importlib.import_module(f"{__package__}.{module}"), name)(*a, **k)


plot_pareto_pair = _lazy("plots", "plot_pareto_pair")
plot_parallel = _lazy("figures", "plot_parallel")
plot_hypervolume = _lazy("figures", "plot_hypervolume")

_STATE = {"PRUNED": "stopped early"}
_STOPPED_TITLE = "Stopped early (successive halving: never on the front)"
_STOPPED_COLUMNS = ("number", "arch", "stopped_rung", "stopped_step", "rung_kl", "train_seconds")


@dataclass
class _Report:
    """One report being written: its inputs, then what each step adds (front, figures, summary)."""

    df: pd.DataFrame
    objectives: dict[str, str]
    out: Path
    title: str
    settings: dict | None
    teacher: dict | None
    compare: Mapping[str, pd.DataFrame] | None
    extra: dict
    notes: list[str]
    importances: Mapping[str, Mapping[str, float]]
    exported: dict[int, str]
    export_command: str | None
    extras: ReportExtras
    written: dict[str, str] = field(default_factory=dict)
    images: list[tuple[str, str]] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def write_tables(self) -> None:
        df, obj = self.df, self.objectives
        if "on_front" not in df.columns and not df.empty:
            df["on_front"] = df.index.isin(pareto_front(df, obj).index)
        df.to_csv(self.out / "trials.csv", index=False)
        self.written["trials_csv"] = str(self.out / "trials.csv")
        try:
            import pyarrow  # noqa: F401

            df.to_parquet(self.out / "trials.parquet", index=False)
            self.written["trials_parquet"] = str(self.out / "trials.parquet")
        except ImportError:
            pass
        self.front = pareto_front(df, obj) if not df.empty else df
        self.front.to_csv(self.out / "front.csv", index=False)
        self.written["front_csv"] = str(self.out / "front.csv")
        self.complete = df[df["state"] == "COMPLETE"] if not df.empty else df
        self.rec = recommendation(self.front, obj)
        self.highlight = {} if self.rec is None else {self.rec["trial"]: "recommended (knee)"}
        for n, where in self.exported.items():
            self.highlight[n] = (
                self.highlight.get(n, "") + ("; " if n in self.highlight else "") + f"exported to {where}"
            )

    def write_figures(self) -> None:
        """Every figure, drawn only when :class:`FigureCache` has no current copy; those to draw are
        listed first and drawn together (on two processes where two cores are free)."""
        df, obj, title = self.df, self.objectives, self.title
        self.ref_used, self.hv = None, 0.0
        floor = (self.teacher or {}).get("teacher_mc_floor_kl")
        floors = {"kl": floor, "test_kl": floor} if isinstance(floor, (int, float)) else None
        digest = inputs_digest(df, obj, title, self.highlight, self.compare, floors, self.extras)
        self.figures = FigureCache(self.out, digest)  # unchanged inputs: PNGs are read back, not drawn
        jobs: list = []  # the sections' figures, recorded (not drawn) by a first pass
        build_sections(self.extras, df, self.highlight, title, render=lambda *job: jobs.append(job) or b"")
        compare = self.compare or {}
        ref = reference_point(pd.concat([df, *compare.values()]), obj) if compare else None
        own = self._figure_jobs(floors, ref) if len(self.complete) else []
        self.figures.prefetch(jobs + own)
        self.sections = build_sections(self.extras, df, self.highlight, title, render=self.figures.render)
        for name, data in (f for s in self.sections for f in s.figures if "/" not in f[0]):
            (self.out / name).write_bytes(data)
            self.written[name] = str(self.out / name)
        for name, make in own:
            data = self.figures.render(name, make)
            (self.out / name).write_bytes(data)
            self.images.append((name, base64.b64encode(data).decode()))
            self.written[name] = str(self.out / name)
        self.figures.save()
        if len(self.complete):
            self.ref_used = ref if ref is not None else reference_point(df, obj)
            self.hv = hypervolume(self.front[list(obj)].to_numpy(float), self.ref_used, list(obj.values()))

    def _figure_jobs(self, floors: dict | None, ref) -> list[tuple[str, Callable[[], object]]]:
        """``(file name, make)`` of the Pareto pairs, parallel coordinates and hypervolume history."""
        df, obj, title, compare = self.df, self.objectives, self.title, self.compare or {}
        pair = partial(plot_pareto_pair, df, objectives=obj, highlight=self.highlight, floors=floors)
        color = "family" if "family" in df.columns else None
        jobs = []
        for x, y in itertools.combinations(obj, 2):
            label = f"{title}: {column_label(y)} vs {column_label(x)}"
            make = partial(pair, x, y, color_by=color, extra_fronts=self.compare, title=label)
            jobs.append((f"pareto_{x}_vs_{y}.png", make))
        if "lambda_g" in df.columns and df["lambda_g"].nunique() > 1:
            x, y = list(obj)[:2] if len(obj) > 1 else (list(obj)[0], "bytes_fp32")
            jobs.append(
                (f"pareto_{x}_vs_{y}_lambda.png", partial(pair, x, y, color_by="lambda_g", title=f"{title}: by λ_g"))
            )
        more = [c for c in ("test_student_acc", "expected_entropy_mae", "params") if c in df.columns and c not in obj]
        jobs.append(
            ("parallel.png", partial(plot_parallel, df, [*obj, *more], obj, highlight=self.highlight, title=title))
        )

        def hv_figure():  # drawn from the trials' hypervolume histories, computed only when it is drawn
            histories = {name: hypervolume_history(d, obj, ref=ref) for name, d in {title: df, **compare}.items()}
            return plot_hypervolume(histories if compare else histories[title])

        return [*jobs, ("hypervolume.png", hv_figure)]

    def write_summary(self) -> None:
        df, obj, front = self.df, self.objectives, self.front
        self.counts = df["state"].value_counts().to_dict() if not df.empty else {}
        self.ref_text = (
            "n/a"
            if self.ref_used is None
            else ", ".join(f"{column_label(k)} {format_value(k, float(v))}" for k, v in zip(obj, self.ref_used))
        )
        self.summary = {
            "trials": {str(k): int(v) for k, v in self.counts.items()},
            "front_size": len(front),
            "hypervolume": self.hv,
            "reference_point": self.ref_text,
            "recommended": self.rec,
            **self.extra,
        }
        cols = front_columns(front, obj)
        (self.out / "summary.json").write_text(
            json.dumps({**self.summary, "front": front[cols].to_dict("records")}, indent=2, default=str)
        )
        self.written["summary_json"] = str(self.out / "summary.json")
        self.note = selection_note(self.complete if len(self.complete) else df)
        self.summary["selection"] = self.note
        states = ", ".join(f"{n} {_STATE.get(k, str(k).lower())}" for k, n in self.counts.items()) or "none"
        better = ", ".join(
            f"{column_label(k)} ({'lower' if v == 'minimize' else 'higher'} is better)" for k, v in obj.items()
        )
        self.lines = [
            f"Trials: {states}.",
            f"Pareto front: {len(front)} of {len(self.complete)} complete trials are not dominated on {better}.",
            f"Hypervolume {format_number(self.hv)}: the part of objective space (in the objectives' units) the front "
            f"dominates up to the reference point ({self.ref_text}); higher is better; compare only studies with "
            "the same reference point.",
        ]
        self.rec_lines = []
        if self.rec is not None:
            self.rec_lines = [recommendation_sentence(self.rec, obj), f"Why: {KNEE_RULE}."]
            if self.export_command:
                self.rec_lines.append(f"Export it: `{self.export_command}`")
            if self.rec.get("warning"):
                self.rec_lines.append(f"Warning: {self.rec['warning']}.")
        self.failed = (
            df[df["state"] == "FAIL"][["number", "fail_reason"]] if "fail_reason" in df.columns else df.iloc[:0]
        )
        stop_cols = [c for c in _STOPPED_COLUMNS if c in df.columns]
        self.stopped = (
            df[(df["state"] == "PRUNED") & df["stopped_rung"].notna()][stop_cols].assign(
                stopped_rung=lambda d: d["stopped_rung"].astype(int) + 1
            )
            if "stopped_rung" in df.columns
            else df.iloc[:0]
        )

    def write_markdown(self) -> None:
        obj, front = self.objectives, self.front
        md = [f"> {self.note}", "", f"# {self.title}", ""]
        md += (
            [f"**{self.rec_lines[0]}**  ", *[f"{x}  " for x in self.rec_lines[1:]], ""]
            if self.rec_lines
            else [f"**{_NO_REC}**", ""]
        )
        md += [f"{x}  " for x in self.lines] + [""]
        if self.teacher:
            md += ["## Teacher", "", md_pretty(pd.DataFrame([self.teacher]), list(self.teacher)), ""]
        md += [
            "## Pareto front",
            "",
            md_pretty(front, readable_columns(front, obj)) if len(front) else "(empty: no complete trial)",
            "",
            "Every column of every trial: trials.csv; the front: front.csv.",
            "",
        ]
        if self.importances:
            md += [
                "## Parameter importances (Optuna's default evaluator, fANOVA; share of each objective's variance)",
                "",
                markdown_table(_importance_frame(self.importances)),
                "",
            ]
        if self.notes:
            md += ["## Notes", "", *[f"- {n}" for n in self.notes], ""]
        if len(self.failed):
            md += ["## Failed trials", "", markdown_table(self.failed), ""]
        if len(self.stopped):
            md += [f"## {_STOPPED_TITLE}", "", markdown_table(self.stopped), ""]
        md += [*[f"![{caption(n, obj, self.title)}]({n})" for n, _ in self.images], ""]
        md += [line for s in self.sections for line in section_markdown(s)]
        (self.out / "summary.md").write_text("\n".join(md))
        self.written["summary_md"] = str(self.out / "summary.md")

    def write_html(self) -> None:
        obj, front, df, e = self.objectives, self.front, self.df, html.escape
        mark = {n: "knee" for n in self.highlight if self.rec and n == self.rec["trial"]}
        mark.update({n: "exported" for n in self.exported if n not in mark})
        body = [f'<p class="sel"><b>{e(self.note)}</b></p>', f"<h1>{e(self.title)}</h1>"]
        if self.rec_lines:
            cmd = f"<p>Export it: <code>{e(self.export_command)}</code></p>" if self.export_command else ""
            warn = f"<p><b>Warning:</b> {e(self.rec['warning'])}.</p>" if self.rec.get("warning") else ""
            body += [
                f'<div class="rec"><p><b>{e(self.rec_lines[0])}</b></p><p>Why: {e(KNEE_RULE)}.</p>{cmd}{warn}</div>'
            ]
        else:
            body += [f'<div class="rec"><p><b>{_NO_REC}</b></p></div>']
        body += ["<p>" + "<br>".join(e(x) for x in self.lines) + "</p>"]
        if self.teacher:
            body += ["<h2>Teacher</h2>", pretty_table(pd.DataFrame([self.teacher]), list(self.teacher), sortable=False)]
        body += [
            "<h2>Pareto front</h2><p>Click a header to sort. Highlighted: the recommended student"
            + (" and exported students" if self.exported else "")
            + ".</p>",
            pretty_table(front, readable_columns(front, obj), mark=mark)
            if len(front)
            else "<p>empty: no complete trial</p>",
        ]
        body += [
            f'<figure><img alt="{e(caption(n, obj, self.title))}" src="data:image/png;base64,{b}">'
            f"<figcaption>{e(caption(n, obj, self.title))}</figcaption></figure>"
            for n, b in self.images
        ]
        body += [section_html(s) for s in self.sections]
        if self.importances:
            body += [
                "<h2>Parameter importances</h2><p>Optuna's default evaluator (fANOVA): the share of each "
                "objective's variance over the trials that each parameter explains.</p>",
                _importance_frame(self.importances).to_html(
                    index=False, border=0, classes="t", float_format=format_number
                ),
            ]
        if self.notes:
            body += ["<h2>Notes</h2><ul>", *[f"<li>{e(n)}</li>" for n in self.notes], "</ul>"]
        if len(self.failed):
            body += ["<h2>Failed trials</h2>", pretty_table(self.failed, ["number", "fail_reason"])]
        if len(self.stopped):
            body += [f"<h2>{_STOPPED_TITLE}</h2>", pretty_table(self.stopped, list(self.stopped.columns))]
        if not df.empty:
            all_cols = [c for c in front_columns(df, obj) + ["state", "on_front", "duration_s"] if c in df.columns]
            body += ["<h2>All trials</h2>", pretty_table(df.sort_values("number"), all_cols, mark=mark)]
        if self.settings:
            import yaml

            body += ["<h2>Study settings</h2>", f"<pre>{e(yaml.safe_dump(self.settings, sort_keys=False))}</pre>"]
        doc = (
            f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>{e(self.title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}<script>{SORT_JS}</script></body></html>"
        )
        (self.out / "index.html").write_text(doc)
        self.written["index_html"] = str(self.out / "index.html")


_NO_REC = "No student to recommend yet: the study has no complete trial."


def _importance_frame(importances: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    params = sorted({p for imp in importances.values() for p in imp})
    rows = [
        {
            "parameter": p,
            **{column_label(o): imp.get(p, float("nan")) for o, imp in importances.items()},
        }
        for p in params
    ]
    return pd.DataFrame(rows)
