"""What a study's search strategy did, in sentences for its report (``search.strategy`` supernet / halving)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

__all__ = ["strategy_notes"]


def strategy_notes(study: optuna.Study) -> list[str]:
    """Sentences on the supernet (its cost, the architectures it scored, Kendall tau) and on the trials
    successive halving stopped early; none for a study of plain trials."""
    notes = []
    sn = study.user_attrs.get("supernet")
    if isinstance(sn, dict):
        fams = "; ".join(
            f"{r.get('arch', f)}: {int(r.get('steps', 0)):,} sandwich steps, {float(r.get('seconds', 0)):,.0f} s"
            for f, r in (sn.get("families") or {}).items()
        )
        notes.append(
            f"Supernet (search.strategy supernet): {fams}. {sn.get('configurations', 0):,} configurations "
            f"({sn.get('architectures', 0):,} architectures) scored with inherited weights in "
            f"{float(sn.get('score_seconds', 0)):,.0f} s; the {sn.get('chosen', 0)} best by non-dominated sorting "
            f"became trials, each starting from its slice and distilled for {sn.get('finetune_steps', 0):,} steps. "
            "The supernet's seconds count in the study's compute (gped-search compare)."
        )
        chk = study.user_attrs.get("supernet_check")
        if isinstance(chk, dict):
            notes.append(
                f"How well inherited scores rank stand-alone training: Kendall tau {chk.get('tau', float('nan')):.3f} "
                f"between inherited and stand-alone validation KL over {chk.get('n', 0)} configurations not chosen, "
                f"each distilled alone at full length ({float(chk.get('seconds', 0)):,.0f} s; a diagnostic, not trials)."
            )
        else:
            notes.append("Kendall tau of inherited vs stand-alone scores: not measured (search.supernet.check: 0).")
    stopped = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if "stopped_rung" in t.user_attrs
    ]
    if stopped:
        by_rung: dict[int, int] = {}
        for t in stopped:
            r = int(t.user_attrs["stopped_rung"]) + 1
            by_rung[r] = by_rung.get(r, 0) + 1
        rungs = ", ".join(f"{n} after rung {r}" for r, n in sorted(by_rung.items()))
        secs = sum(float(t.user_attrs.get("train_seconds", 0.0)) for t in stopped)
        notes.append(
            f"Successive halving stopped {len(stopped)} trials early ({rungs}; {secs:,.0f} s of training). "
            "They are recorded as PRUNED with their rung and validation KL, and are never on the front, the "
            "knee or best."
        )
    return notes
