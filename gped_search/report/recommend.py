"""What the report recommends and shows: the knee (with its rule and the accuracy warning), the
selection note, and the front's columns. Pure (pandas, no matplotlib), so ``pareto`` and ``status``
stay light; :mod:`.writer` re-exports these names."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from .formatting import column_label, format_value
from .tables import knee_accuracy_gap, knee_point

__all__ = [
    "SHOWN_COLUMNS",
    "READABLE_COLUMNS",
    "recommendation_sentence",
    "KNEE_RULE",
    "selection_note",
    "readable_columns",
    "front_columns",
    "recommendation",
]

KNEE_RULE = (
    "the knee: scale each objective to 0..1 over the front (0 = the front's best value), then take the "
    "front member closest to the ideal corner (0, ..., 0) in Euclidean distance"
)
"""How the recommended student is chosen, in words (report, CLI)."""

# column -> (header with unit, format): int, kB, ms, pct (fraction shown as %), g (4 significant), str
SHOWN_COLUMNS = (
    "family",
    "arch",
    "precision",
    "lambda_g",
    "units_removed",
    "params",
    "bytes_fp32",
    "macs",
    "latency_ms",
    "latency_p10_ms",
    "latency_p90_ms",
    "kl",
    "fp32_kl",
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


READABLE_COLUMNS = (
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
    return list(dict.fromkeys(c for c in cols + list(READABLE_COLUMNS) if c in df.columns))


def front_columns(df: pd.DataFrame, objectives: Mapping[str, str]) -> list[str]:
    cols = ["number", *objectives]
    return cols + [c for c in SHOWN_COLUMNS if c in df.columns and c not in cols]


def recommendation(front: pd.DataFrame, objectives: Mapping[str, str]) -> dict | None:
    """The knee of the front (see :data:`KNEE_RULE`) as a dict of its number, student and metrics."""
    if front.empty:
        return None
    label = knee_point(front, objectives)
    row = front.loc[label]
    out = {"trial": int(row["number"]), "rule": KNEE_RULE}
    gap = knee_accuracy_gap(front, label)
    if gap:
        out["warning"] = gap["warning"]
    for c in ("arch", *objectives, "test_student_acc", "test_kl", "student_acc"):
        if c in row.index and c not in out:
            v = row[c]
            out[c] = v.item() if hasattr(v, "item") else v
    return out


def recommendation_sentence(rec: dict, objectives: Mapping[str, str]) -> str:
    figs = ", ".join(f"{column_label(k)} {format_value(k, rec.get(k))}" for k in objectives)
    acc = (
        f"; test accuracy {format_value('test_student_acc', rec['test_student_acc'])} %"
        if "test_student_acc" in rec
        else ""
    )
    return f"Recommended student: trial {rec['trial']} ({rec.get('arch', '?')}): {figs}{acc}."
