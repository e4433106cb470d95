"""How the report shows numbers: column headers with units, per-column formats, tables in HTML
(sortable, marked rows) and Markdown, figure captions, the page's style and script."""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = [
    "format_number",
    "column_label",
    "format_value",
    "markdown_table",
    "pretty_table",
    "md_pretty",
    "caption",
    "STYLE",
    "SORT_JS",
]

# column -> (header with unit, format): int, kB, ms, pct (fraction shown as %), g (4 significant), str
_COLUMNS = {
    "number": ("trial", "int"),
    "family": ("family", "str"),
    "arch": ("student", "str"),
    "precision": ("precision", "str"),
    "lambda_g": ("λ_g", "g"),
    "units_removed": ("units pruned", "int"),
    "params": ("parameters", "int"),
    "bytes_fp32": ("size fp32 [kB]", "kB"),
    "bytes_fp16": ("size fp16 [kB]", "kB"),
    "bytes": ("size as deployed [kB]", "kB"),
    "macs": ("MACs", "int"),
    "latency_ms": ("latency [ms]", "ms"),
    "latency_p10_ms": ("latency p10 [ms]", "ms"),
    "latency_p90_ms": ("latency p90 [ms]", "ms"),
    "kl": ("KL val [nats]", "g"),
    "kl_st": ("KL(student‖teacher) val [nats]", "g"),
    "fp32_kl": ("KL val fp32 [nats]", "g"),
    "expected_entropy_mae": ("exp. entropy MAE val [nats]", "g"),
    "expected_entropy_bias": ("exp. entropy bias val [nats]", "g"),
    "student_acc": ("accuracy val [%]", "pct"),
    "student_nll": ("NLL val [nats]", "g"),
    "student_ece": ("ECE val [%]", "pct"),
    "ood_auroc": ("OOD AUROC val", "g"),
    "rank_spearman": ("uncertainty rank ρ val", "g"),
    "test_kl": ("KL test [nats]", "g"),
    "test_student_acc": ("accuracy test [%]", "pct"),
    "test_student_nll": ("NLL test [nats]", "g"),
    "test_expected_entropy_mae": ("exp. entropy MAE test [nats]", "g"),
    "test_ood_auroc": ("OOD AUROC test", "g"),
    "state": ("state", "str"),
    "duration_s": ("duration [s]", "g"),
    "on_front": ("on front", "str"),
    "fail_reason": ("why it failed", "str"),
    "teacher_acc": ("accuracy test [%]", "pct"),
    "teacher_nll": ("NLL test [nats]", "g"),
    "teacher_ece": ("ECE test [%]", "pct"),
    "teacher_val_acc": ("accuracy val [%]", "pct"),
    "teacher_val_nll": ("NLL val [nats]", "g"),
    "teacher_mc_floor_kl": ("Monte-Carlo floor KL [nats]", "g"),
    "iterations": ("SGLD iterations", "int"),
    "seconds": ("sampling time [s]", "g"),
    "ms_per_iteration": ("ms per iteration", "g"),
    "test_samples": ("posterior samples averaged", "int"),
    "bank_samples": ("samples in the bank", "int"),
    "chains": ("chains", "int"),
}


def column_label(name: str) -> str:
    """A column's header with its unit (``bytes_fp32`` -> ``size fp32 [kB]``); unknown names as they are."""
    return _COLUMNS.get(name, (name, ""))[0]


def format_value(name: str, v) -> str:
    """One number in the report's style for its column: kB, ms, %, thousands separators, 4 significant."""
    kind = _COLUMNS.get(name, (name, ""))[1]
    if v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else ""
    try:
        if kind == "int":
            return f"{int(v):,}"
        if kind == "kB":
            return f"{float(v) / 1e3:,.1f}"
        if kind == "ms":
            return f"{float(v):.3g}"
        if kind == "pct":
            return f"{100 * float(v):.2f}"
        if kind == "g":
            return f"{float(v):.4g}"
    except (TypeError, ValueError):
        pass
    return format_number(v)


def format_number(v) -> str:
    """Any value as text, floats with 4 significant digits (scientific outside 1e-3..1e5)."""
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
        lines.append("| " + " | ".join(format_number(row[c]).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines)


def caption(name: str, objectives: Mapping[str, str], title: str) -> str:
    k = len(objectives)
    if name == "hypervolume.png":
        return (
            "Hypervolume after each trial (higher is better): how the front improved as trials were spent; "
            "flat stretches are trials that found nothing new."
        )
    if name == "parallel.png":
        return (
            "Every complete trial across every objective, each axis scaled over the trials (lower is better); "
            "red: on the front, gold: the recommended student."
        )
    if name.endswith("_lambda.png"):
        return "The same trials coloured by the group-LASSO strength λ_g (grey: no pruning)."
    if name.startswith("pareto_"):
        x, y = name[len("pareto_") : -len(".png")].split("_vs_")
        ring = f"on the {k}-objective front" if k > 2 else "on the front"
        return (
            f"{column_label(y)} against {column_label(x)} for every complete trial; ringed: {ring} "
            "(labels are trial numbers); star: the recommended student."
        )
    return name


def pretty_table(
    frame: pd.DataFrame,
    cols: list[str],
    *,
    mark: Mapping[int, str] | None = None,
    sortable: bool = True,
) -> str:
    """An HTML table with unit headers, per-column number formats, raw values for sorting, marked rows."""
    cols = [c for c in cols if c in frame.columns]
    head = "".join(f'<th title="{html.escape(c)}">{html.escape(column_label(c))}</th>' for c in cols)
    rows = []
    for _, r in frame.iterrows():
        num = r.get("number")
        cls = (mark or {}).get(int(num)) if isinstance(num, (int, np.integer, float)) and num == num else None
        cells = []
        for c in cols:
            v = r[c]
            raw = v if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) else str(v)
            nowrap = ' class="nw"' if c in ("arch", "number") else ""
            cells.append(f'<td{nowrap} data-v="{html.escape(str(raw))}">{html.escape(format_value(c, v))}</td>')
        rows.append(f"<tr{f' class={cls}' if cls else ''}>{''.join(cells)}</tr>")
    cls = "t sortable" if sortable else "t"
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def md_pretty(frame: pd.DataFrame, cols: list[str]) -> str:
    cols = [c for c in cols if c in frame.columns]
    lines = ["| " + " | ".join(column_label(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(format_value(c, r[c]).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines)


SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th, i){
  th.style.cursor='pointer'; th.addEventListener('click', function(){
    var tb=th.closest('table').tBodies[0], rows=Array.from(tb.rows), asc=th.dataset.asc!=='1';
    rows.sort(function(a,b){var x=a.cells[i].dataset.v, y=b.cells[i].dataset.v, nx=parseFloat(x), ny=parseFloat(y);
      var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:String(x).localeCompare(String(y)); return asc?c:-c;});
    th.dataset.asc=asc?'1':'0'; rows.forEach(function(r){tb.appendChild(r);});});});
"""

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;line-height:1.4}"
    ".scroll{overflow-x:auto;max-width:100%}table.t{border-collapse:collapse;font-size:13px}"
    "table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
    "table.t th{background:#f3f3f3;position:sticky;top:0}td.nw{white-space:nowrap;text-align:left}"
    "tr.knee{background:#fff3c4}tr.exported{background:#dff1ff}"
    ".rec{border:2px solid #e0b000;background:#fffbea;padding:0.8em 1em;border-radius:6px}"
    "img{max-width:100%;height:auto}figure{margin:1.2em 0}figcaption{color:#444;font-size:14px}"
    "pre{background:#f6f6f6;padding:1em;font-size:12px;overflow-x:auto}code{background:#f3f3f3;padding:0 3px}"
)
