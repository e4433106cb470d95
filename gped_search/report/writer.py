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
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .plots import plot_hypervolume, plot_pareto_pair  # noqa: E402
from .tables import hypervolume, hypervolume_history, pareto_front, reference_point  # noqa: E402

__all__ = ["write_report", "front_columns", "markdown_table"]

_SHOW = ("family", "arch", "lambda_g", "units_removed", "params", "bytes_fp32", "macs", "latency_ms",
         "latency_p10_ms", "latency_p90_ms", "kl", "expected_entropy_mae", "expected_entropy_bias", "student_acc",
         "student_nll", "student_ece", "ood_auroc", "rank_spearman",
         "test_kl", "test_student_acc", "test_student_nll", "test_expected_entropy_mae", "test_ood_auroc")


def selection_note(df: pd.DataFrame) -> str:
    """One line saying which data the front was selected on (the report's first line)."""
    split = set(df["selection_split"].dropna()) if "selection_split" in df.columns else set()
    if "test" in split:
        return ("Selected on TEST data: this study has no validation split (data.validation: 0), so the front, "
                "knee and best: were chosen on the same test set they are reported on; expect optimistic figures.")
    if split == {"validation"}:
        return ("Selected on the validation split (carved from the training set, never trained on); test_* "
                "columns are the test set's, reported apart and never used for selection.")
    return "Selection data not recorded (trials from an older gped-search)."


def front_columns(df: pd.DataFrame, objectives: Mapping[str, str]) -> list[str]:
    cols = ["number", *objectives]
    return cols + [c for c in _SHOW if c in df.columns and c not in cols]


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return str(v)
        a = abs(v)
        return f"{v:.4g}" if a == 0 or 1e-3 <= a < 1e5 else f"{v:.3e}"
    return str(v)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (no tabulate dependency)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines)


def _png(fig, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    path.write_bytes(data)
    return base64.b64encode(data).decode()


def write_report(df: pd.DataFrame, objectives: Mapping[str, str], out_dir: str | Path, *, title: str,
                 settings: dict | None = None, teacher: dict | None = None,
                 compare: Mapping[str, pd.DataFrame] | None = None, extra: dict | None = None) -> dict:
    """Write the study's report; returns the written paths and the front."""
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

    images: list[tuple[str, str]] = []
    complete = df[df["state"] == "COMPLETE"] if not df.empty else df
    if len(complete):
        color = "family" if "family" in df.columns else None
        for x, y in itertools.combinations(objectives, 2):
            fig = plot_pareto_pair(df, x, y, objectives, color_by=color, extra_fronts=compare,
                                   title=f"{title}: {y} vs {x}")
            name = f"pareto_{x}_vs_{y}.png"
            images.append((name, _png(fig, out / name)))
            written[name] = str(out / name)
        if "lambda_g" in df.columns and df["lambda_g"].nunique() > 1:
            x, y = list(objectives)[:2] if len(objectives) > 1 else (list(objectives)[0], "bytes_fp32")
            fig = plot_pareto_pair(df, x, y, objectives, color_by="lambda_g", title=f"{title}: by lambda_g")
            name = f"pareto_{x}_vs_{y}_lambda.png"
            images.append((name, _png(fig, out / name)))
            written[name] = str(out / name)
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
    ref_text = "n/a" if ref_used is None else ", ".join(f"{k}={_fmt(float(v))}" for k, v in zip(objectives, ref_used))
    summary = {"trials": {str(k): int(v) for k, v in counts.items()}, "front_size": len(front),
               "hypervolume": hv, "reference_point": ref_text, **(extra or {})}
    (out / "summary.json").write_text(json.dumps({**summary, "front": front[cols].to_dict("records")},
                                                 indent=2, default=str))
    written["summary_json"] = str(out / "summary.json")

    note = selection_note(complete if len(complete) else df)
    summary["selection"] = note
    md = [f"> {note}", "", f"# {title}", "", f"Trials by state: {summary['trials']}  ",
          f"Pareto front ({', '.join(f'{k}: {v}' for k, v in objectives.items())}): {len(front)} trials  ",
          f"Hypervolume: {_fmt(hv)} (reference point {ref_text})", ""]
    if teacher:
        md += ["## Teacher", "", markdown_table(pd.DataFrame([teacher])), ""]
    md += ["## Pareto front", "", markdown_table(front[cols]) if len(front) else "(empty: no complete trial)", ""]
    for k, v in (extra or {}).items():
        md += [f"- {k}: {v}"]
    if len(failed):
        md += ["", "## Failed trials", "", markdown_table(failed)]
    md += ["", *[f"![{n}]({n})" for n, _ in images], ""]
    (out / "summary.md").write_text("\n".join(md))
    written["summary_md"] = str(out / "summary.md")

    def table(frame: pd.DataFrame) -> str:
        return frame.to_html(index=False, float_format=_fmt, na_rep="", border=0, classes="t")

    body = [f'<p class="sel"><b>{html.escape(note)}</b></p>', f"<h1>{html.escape(title)}</h1>",
            f"<p>Trials by state: {html.escape(str(summary['trials']))}. Front size {len(front)} over "
            f"{html.escape(', '.join(f'{k} ({v})' for k, v in objectives.items()))}. "
            f"Hypervolume {_fmt(hv)} (reference point {html.escape(ref_text)}).</p>"]
    if teacher:
        body += ["<h2>Teacher</h2>", table(pd.DataFrame([teacher]))]
    body += ["<h2>Pareto front</h2>", table(front[cols]) if len(front) else "<p>empty: no complete trial</p>"]
    body += [f'<figure><img alt="{n}" src="data:image/png;base64,{b}"><figcaption>{n}</figcaption></figure>'
             for n, b in images]
    if extra:
        body += ["<h2>Notes</h2><ul>", *[f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>"
                                         for k, v in extra.items()], "</ul>"]
    if len(failed):
        body += ["<h2>Failed trials</h2>", table(failed)]
    body += ["<h2>All trials</h2>", table(df[[c for c in front_columns(df, objectives) + ["state", "on_front"]
                                               if c in df.columns]]) if not df.empty else ""]
    if settings:
        import yaml

        body += ["<h2>Study settings</h2>", f"<pre>{html.escape(yaml.safe_dump(settings, sort_keys=False))}</pre>"]
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table.t{border-collapse:collapse;"
             "font-size:13px}table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
             "img{max-width:100%}figure{margin:1em 0}pre{background:#f6f6f6;padding:1em;font-size:12px}")
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    (out / "index.html").write_text(doc)
    written["index_html"] = str(out / "index.html")
    return {"written": written, "front": front, "summary": summary}
