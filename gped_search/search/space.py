"""A trial's settings sampled from the study's search space: :func:`suggest` asks an Optuna trial
(any object with ``suggest_categorical`` / ``suggest_int`` / ``suggest_float``) for every parameter
of ``search.space`` (parsed and validated by :mod:`gped_search.config.space`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from gped_search.choices import Precision, PruneMethod, PruneRule, StudentFamily
from gped_search.config import StudyConfig
from gped_search.config.space import Spec, parse_space

__all__ = ["TrialChoice", "suggest", "Spec", "parse_space"]


@dataclass(frozen=True)
class TrialChoice:
    """A trial's concrete settings, derived from the study config and the sampled parameters."""

    cfg: StudyConfig
    params: dict


def _suggest(trial, spec: Spec, name: str | None = None):
    name = name or spec.name
    if spec.choices is not None:
        return spec.choices[0] if spec.fixed else trial.suggest_categorical(name, list(spec.choices))
    if spec.is_int:
        return trial.suggest_int(name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(name, float(spec.low), float(spec.high), step=spec.step, log=spec.log)


def suggest(trial, cfg: StudyConfig, specs: dict[str, Spec] | None = None) -> TrialChoice:
    """Sample every parameter of the space and return the trial's study config."""
    specs = parse_space(cfg.search.space) if specs is None else specs
    s, pr, d = cfg.student, cfg.prune, cfg.distill
    got: dict[str, Any] = {}

    def get(name, default):
        if name not in specs:
            return default
        got[name] = _suggest(trial, specs[name])
        return got[name]

    family = StudentFamily(get("family", s.family.value))
    widths, m1, m2 = s.widths, s.m1, s.m2
    if family == StudentFamily.mlp:
        depth = int(get("mlp_depth", len(s.widths)))
        if "mlp_width" in specs:
            w = specs["mlp_width"]
            if w.shared:
                widths = (int(_suggest(trial, w, "mlp_width")),) * depth
            else:
                widths = tuple(int(_suggest(trial, w, f"width_{i}")) for i in range(depth))
        else:
            widths = tuple((list(s.widths) + [s.widths[-1]] * depth)[:depth])
    else:
        m1 = float(get("m1", s.m1))
        m2 = float(get("m2", s.m2))
    student = replace(
        s,
        family=family,
        widths=widths,
        m1=m1,
        m2=m2,
        dropout=float(get("dropout", s.dropout)),
        precision=Precision(get("precision", s.precision.value)),
    )
    on = bool(get("prune_on", True))
    lambda_g = float(get("lambda_g", pr.lambda_g)) if on else 0.0
    rule = PruneRule(get("rule", pr.rule.value))
    prune = replace(
        pr,
        method=PruneMethod(get("method", pr.method.value)),
        lambda_g=lambda_g,
        rule=rule,
        tau=float(get("tau", pr.tau)),
        ratio=float(get("ratio", pr.ratio)),
        budget=float(get("budget", pr.budget)),
        reg=float(get("reg", pr.reg)),
        rounds=int(get("rounds", pr.rounds)),
    )
    distill = replace(
        d,
        lr=float(get("lr", d.lr)),
        derivative_weight=float(get("derivative_weight", d.derivative_weight)),
        relational_weight=float(get("relational_weight", d.relational_weight)),
    )
    return TrialChoice(replace(cfg, student=student, prune=prune, distill=distill), dict(trial.params))
