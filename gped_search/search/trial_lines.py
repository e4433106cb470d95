"""The one line ``gped-search run`` prints per finished trial: number, state, student, objectives and
whether it is on the front (or, for a trial successive halving stopped, where it stopped)."""

from __future__ import annotations

import math
import sys

import optuna
from tqdm.auto import tqdm

__all__ = ["trial_line", "echo_trial"]


def trial_line(study: optuna.Study, number: int) -> str:
    """One line for a finished trial: number, state, student, objectives, whether it is on the front."""
    from .results import trials_frame

    df = trials_frame(study, calibrated=False)
    row = df[df["number"] == number]
    if row.empty:
        return f"trial {number}: not in the study"
    r = row.iloc[0]
    if r["state"] == "PRUNED" and _present(r.get("stopped_rung")):
        kl = r.get("rung_kl")
        return (
            f"trial {number:>3}  stopped   {str(r.get('arch', '')):24s}  after rung {int(r['stopped_rung']) + 1} "
            f"(step {int(r['stopped_step'])})" + (f", val KL {kl:.4g}" if _present(kl) else "")
        )
    if r["state"] != "COMPLETE":
        reason = r.get("fail_reason")
        return f"trial {number:>3}  {r['state'].lower():8s}  " + (reason if isinstance(reason, str) else "")
    names = study.user_attrs.get("objectives", [])
    vals = "  ".join(f"{n} {_short(n, r.get(n))}" for n in names)
    done = df[df["state"] == "COMPLETE"]
    front = f"on the front ({int(done['on_front'].sum())} of {len(done)})" if r.get("on_front") else "dominated"
    arch = str(r.get("arch", "")) + (" int8" if r.get("precision") == "int8" else "")
    return f"trial {number:>3}  complete  {arch:24s}  {vals}  {front}"


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _short(name: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if name.startswith("bytes"):
        return f"{v / 1e3:,.1f} kB" if v < 1e6 else f"{v / 1e6:,.2f} MB"
    if name.endswith("_ms"):
        return f"{v:.3g} ms"
    if name in ("params", "macs", "macs_conv_linear"):
        return f"{v:,.0f}"
    return f"{v:.4g}"


def echo_trial(study: optuna.Study, number: int) -> None:
    """Print :func:`trial_line` above any progress bar."""
    tqdm.write(trial_line(study, number), file=sys.stdout)
