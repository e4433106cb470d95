"""The one writer: a study's tables, figures, ``index.html`` (self-contained) and ``summary.md``.

Everything it writes goes under ``reports/<study>/``: ``trials.csv`` (every trial, with
``on_front``), ``front.csv``, ``trials.parquet`` when pyarrow is present, ``pareto_<x>_vs_<y>.png``
for each pair of objectives, ``hypervolume.png``, ``index.html`` and ``summary.md``.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .figures import plot_hypervolume, plot_parallel  # noqa: E402
from .formatting import (  # noqa: E402, F401
    SORT_JS,
    STYLE,
    _fmt,
    caption,
    column_label,
    format_value,
    markdown_table,
    md_pretty,
    pretty_table,
)
from .plots import plot_pareto_pair  # noqa: E402
from .tables import hypervolume, hypervolume_history, knee_point, pareto_front, reference_point  # noqa: E402

__all__ = [
    "write_report",
    "front_columns",
    "markdown_table",
    "column_label",
    "format_value",
    "KNEE_RULE",
]

KNEE_RULE = (
    "the knee: scale each objective to 0..1 over the front (0 = the front's best value), then take the "
    "front member closest to the ideal corner (0, ..., 0) in Euclidean distance"
)
"""How the recommended student is chosen, in words (report, CLI)."""

# column -> (header with unit, format): int, kB, ms, pct (fraction shown as %), g (4 significant), str
_SHOW = (
    "family",
    "arch",
    "lambda_g",
    "units_removed",
    "params",
    "bytes_fp32",
    "macs",
    "latency_ms",
    "latency_p10_ms",
    "latency_p90_ms",
    "kl",
    "expected_entropy_mae",
    "expected_entropy_bias",
    "student_acc",
    "student_nll",
    "student_ece",
    "ood_auroc",
    "rank_spearman",
    "test_kl",
    "test_student_acc",
    "test_student_nll",
    "test_expected_entropy_mae",
    "test_ood_auroc",
)


def selection_note(df: pd.DataFrame) -> str:
    """One line saying which data the front was selected on (the report's first line)."""
    split = set(df["selection_split"].dropna()) if "selection_split" in df.columns else set()
    if "test" in split:
        return (
            "Selected on TEST data: this study has no validation split (data.validation: 0), so the front, "
            "knee and best: were chosen on the same test set they are reported on; expect optimistic figures."
        )
    if split == {"validation"}:
        return (
            "Selected on the validation split (carved from the training set, never trained on); test_* "
            "columns are the test set's, reported apart and never used for selection."
        )
    return "Selection data not recorded (trials from an older gped-search)."


_READABLE = (
    "arch",
    "lambda_g",
    "params",
    "test_kl",
    "test_student_acc",
    "expected_entropy_mae",
    "expected_entropy_bias",
    "test_ood_auroc",
)


def readable_columns(df: pd.DataFrame, objectives: Mapping[str, str]) -> list[str]:
    """The front table's columns in the report: trial, student, objectives and a few test figures."""
    cols = ["number", "arch", *objectives]
    return list(dict.fromkeys(c for c in cols + list(_READABLE) if c in df.columns))


def front_columns(df: pd.DataFrame, objectives: Mapping[str, str]) -> list[str]:
    cols = ["number", *objectives]
    return cols + [c for c in _SHOW if c in df.columns and c not in cols]


def _png(fig, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    path.write_bytes(data)
    return base64.b64encode(data).decode()


def recommendation(front: pd.DataFrame, objectives: Mapping[str, str]) -> dict | None:
    """The knee of the front (see :data:`KNEE_RULE`) as a dict of its number, student and metrics."""
    if front.empty:
        return None
    row = front.loc[knee_point(front, objectives)]
    out = {"trial": int(row["number"]), "rule": KNEE_RULE}
    for c in ("arch", *objectives, "test_student_acc", "test_kl", "student_acc"):
        if c in row.index and c not in out:
            v = row[c]
            out[c] = v.item() if hasattr(v, "item") else v
    return out


def _rec_sentence(rec: dict, objectives: Mapping[str, str]) -> str:
    figs = ", ".join(f"{column_label(k)} {format_value(k, rec.get(k))}" for k in objectives)
    acc = (
        f"; test accuracy {format_value('test_student_acc', rec['test_student_acc'])} %"
        if "test_student_acc" in rec
        else ""
    )
    return f"Recommended student: trial {rec['trial']} ({rec.get('arch', '?')}): {figs}{acc}."


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
) -> dict:
    """Write the study's report; returns the written paths, the front and the summary.

    The report opens with the data the front was selected on and the recommended student (the knee,
    :data:`KNEE_RULE`) with the command that exports it; the knee and ``exported`` trials (number ->
    where) are starred in every plot and highlighted in the tables. ``notes`` are sentences for the
    Notes section, ``extra`` machine-readable figures for ``summary.json``, ``importances`` maps an
    objective to Optuna's parameter importances for it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    objectives = dict(objectives)
    written: dict[str, str] = {}
    df = df.copy()
    if "on_front" not in df.columns and not df.empty:
        df["on_front"] = df.index.isin(pareto_front(df, objectives).index)
    df.to_csv(out / "trials.csv", index=False)
    written["trials_csv"] = str(out / "trials.csv")
    try:
        import pyarrow  # noqa: F401

        df.to_parquet(out / "trials.parquet", index=False)
        written["trials_parquet"] = str(out / "trials.parquet")
    except ImportError:
        pass
    front = pareto_front(df, objectives) if not df.empty else df
    front.to_csv(out / "front.csv", index=False)
    written["front_csv"] = str(out / "front.csv")
    rec = recommendation(front, objectives)
    highlight = {} if rec is None else {rec["trial"]: "recommended (knee)"}
    for n, where in (exported or {}).items():
        highlight[int(n)] = highlight.get(int(n), "") + ("; " if int(n) in highlight else "") + f"exported to {where}"

    images: list[tuple[str, str]] = []
    complete = df[df["state"] == "COMPLETE"] if not df.empty else df
    if len(complete):
        color = "family" if "family" in df.columns else None
        for x, y in itertools.combinations(objectives, 2):
            fig = plot_pareto_pair(
                df,
                x,
                y,
                objectives,
                color_by=color,
                extra_fronts=compare,
                title=f"{title}: {column_label(y)} vs {column_label(x)}",
                highlight=highlight,
            )
            name = f"pareto_{x}_vs_{y}.png"
            images.append((name, _png(fig, out / name)))
            written[name] = str(out / name)
        if "lambda_g" in df.columns and df["lambda_g"].nunique() > 1:
            x, y = list(objectives)[:2] if len(objectives) > 1 else (list(objectives)[0], "bytes_fp32")
            fig = plot_pareto_pair(
                df,
                x,
                y,
                objectives,
                color_by="lambda_g",
                title=f"{title}: by λ_g",
                highlight=highlight,
            )
            name = f"pareto_{x}_vs_{y}_lambda.png"
            images.append((name, _png(fig, out / name)))
            written[name] = str(out / name)
        axes_cols = [
            *objectives,
            *[
                c
                for c in ("test_student_acc", "expected_entropy_mae", "params")
                if c in df.columns and c not in objectives
            ],
        ]
        fig = plot_parallel(df, axes_cols, objectives, highlight=highlight, title=title)
        images.append(("parallel.png", _png(fig, out / "parallel.png")))
        written["parallel.png"] = str(out / "parallel.png")
        histories = {}
        ref = reference_point(pd.concat([df, *(compare or {}).values()]), objectives) if compare else None
        histories[title] = hypervolume_history(df, objectives, ref=ref)
        for name, other in (compare or {}).items():
            histories[name] = hypervolume_history(other, objectives, ref=ref)
        fig = plot_hypervolume(histories if compare else histories[title])
        images.append(("hypervolume.png", _png(fig, out / "hypervolume.png")))
        written["hypervolume.png"] = str(out / "hypervolume.png")
        ref_used = ref if ref is not None else reference_point(df, objectives)
        hv = hypervolume(front[list(objectives)].to_numpy(float), ref_used, list(objectives.values()))
    else:
        ref_used, hv = None, 0.0

    counts = df["state"].value_counts().to_dict() if not df.empty else {}
    failed = df[df["state"] == "FAIL"][["number", "fail_reason"]] if "fail_reason" in df.columns else df.iloc[:0]
    cols = front_columns(front, objectives)
    ref_text = (
        "n/a"
        if ref_used is None
        else ", ".join(f"{column_label(k)} {format_value(k, float(v))}" for k, v in zip(objectives, ref_used))
    )
    summary = {
        "trials": {str(k): int(v) for k, v in counts.items()},
        "front_size": len(front),
        "hypervolume": hv,
        "reference_point": ref_text,
        "recommended": rec,
        **(extra or {}),
    }
    (out / "summary.json").write_text(
        json.dumps({**summary, "front": front[cols].to_dict("records")}, indent=2, default=str)
    )
    written["summary_json"] = str(out / "summary.json")

    note = selection_note(complete if len(complete) else df)
    summary["selection"] = note
    states = ", ".join(f"{n} {str(k).lower()}" for k, n in counts.items()) or "none"
    better = ", ".join(
        f"{column_label(k)} ({'lower' if v == 'minimize' else 'higher'} is better)" for k, v in objectives.items()
    )
    lines = [
        f"Trials: {states}.",
        f"Pareto front: {len(front)} of {len(complete)} complete trials are not dominated on {better}.",
        f"Hypervolume {_fmt(hv)}: the part of objective space (in the objectives' units) the front dominates "
        f"up to the reference point ({ref_text}); higher is better; compare only studies with the same "
        "reference point.",
    ]
    rec_lines = []
    if rec is not None:
        rec_lines = [_rec_sentence(rec, objectives), f"Why: {KNEE_RULE}."]
        if export_command:
            rec_lines.append(f"Export it: `{export_command}`")
    md = [f"> {note}", "", f"# {title}", ""]
    md += (
        [f"**{rec_lines[0]}**  ", *[f"{x}  " for x in rec_lines[1:]], ""]
        if rec_lines
        else ["**No student to recommend yet: the study has no complete trial.**", ""]
    )
    md += [f"{x}  " for x in lines] + [""]
    if teacher:
        md += ["## Teacher", "", md_pretty(pd.DataFrame([teacher]), list(teacher)), ""]
    md += [
        "## Pareto front",
        "",
        md_pretty(front, readable_columns(front, objectives)) if len(front) else "(empty: no complete trial)",
        "",
        "Every column of every trial: trials.csv; the front: front.csv.",
        "",
    ]
    if importances:
        md += [
            "## Parameter importances (Optuna's default evaluator, fANOVA; share of each objective's variance)",
            "",
            markdown_table(_importance_frame(importances)),
            "",
        ]
    if notes:
        md += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    if len(failed):
        md += ["## Failed trials", "", markdown_table(failed), ""]
    md += [*[f"![{caption(n, objectives, title)}]({n})" for n, _ in images], ""]
    (out / "summary.md").write_text("\n".join(md))
    written["summary_md"] = str(out / "summary.md")

    mark = {n: "knee" for n in highlight if rec and n == rec["trial"]}
    mark.update({int(n): "exported" for n in (exported or {}) if int(n) not in mark})
    e = html.escape
    body = [f'<p class="sel"><b>{e(note)}</b></p>', f"<h1>{e(title)}</h1>"]
    if rec_lines:
        cmd = f"<p>Export it: <code>{e(export_command)}</code></p>" if export_command else ""
        body += [f'<div class="rec"><p><b>{e(rec_lines[0])}</b></p><p>Why: {e(KNEE_RULE)}.</p>{cmd}</div>']
    else:
        body += ['<div class="rec"><p><b>No student to recommend yet: the study has no complete trial.</b></p></div>']
    body += ["<p>" + "<br>".join(e(x) for x in lines) + "</p>"]
    if teacher:
        body += [
            "<h2>Teacher</h2>",
            pretty_table(pd.DataFrame([teacher]), list(teacher), sortable=False),
        ]
    body += [
        "<h2>Pareto front</h2><p>Click a header to sort. Highlighted: the recommended student"
        + (" and exported students" if exported else "")
        + ".</p>",
        pretty_table(front, readable_columns(front, objectives), mark=mark)
        if len(front)
        else "<p>empty: no complete trial</p>",
    ]
    body += [
        f'<figure><img alt="{e(caption(n, objectives, title))}" src="data:image/png;base64,{b}">'
        f"<figcaption>{e(caption(n, objectives, title))}</figcaption></figure>"
        for n, b in images
    ]
    if importances:
        body += [
            "<h2>Parameter importances</h2><p>Optuna's default evaluator (fANOVA): the share of each "
            "objective's variance over the trials that each parameter explains.</p>",
            _importance_frame(importances).to_html(index=False, border=0, classes="t", float_format=_fmt),
        ]
    if notes:
        body += ["<h2>Notes</h2><ul>", *[f"<li>{e(n)}</li>" for n in notes], "</ul>"]
    if len(failed):
        body += ["<h2>Failed trials</h2>", pretty_table(failed, ["number", "fail_reason"])]
    if not df.empty:
        all_cols = [c for c in front_columns(df, objectives) + ["state", "on_front"] if c in df.columns]
        body += [
            "<h2>All trials</h2>",
            pretty_table(df.sort_values("number"), all_cols, mark=mark),
        ]
    if settings:
        import yaml

        body += [
            "<h2>Study settings</h2>",
            f"<pre>{e(yaml.safe_dump(settings, sort_keys=False))}</pre>",
        ]
    doc = (
        f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
        f"content='width=device-width, initial-scale=1'><title>{e(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}<script>{SORT_JS}</script></body></html>"
    )
    (out / "index.html").write_text(doc)
    written["index_html"] = str(out / "index.html")
    return {"written": written, "front": front, "summary": summary}


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
