"""One compared study (:class:`StudyRun`: its name, settings, trials, teacher and overhead seconds) and
the labels a comparison groups it by: its method (grid, pruning, a sampler, a strategy) and setting."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["StudyRun", "method_label", "setting_label"]


@dataclass
class StudyRun:
    """One study: its name, settings (the study file as a dict) and trials."""

    name: str
    config: dict
    trials: pd.DataFrame
    teacher: dict = field(default_factory=dict)
    overhead_seconds: float = 0.0
    """Compute spent before the first trial besides the teacher: a supernet's distillation and scoring."""

    @property
    def method(self) -> str:
        return method_label(self.config)

    @property
    def seed(self) -> int:
        s = self.config.get("search", {}).get("seed")
        return int(self.config.get("seed", 0) if s is None else s)

    @property
    def setting(self) -> str:
        return setting_label(self.config)


def _varies(spec) -> bool:
    if isinstance(spec, list):
        return len(spec) > 1
    if isinstance(spec, Mapping):
        vals = spec.get("values")
        return len(vals) > 1 if isinstance(vals, list) else True
    return False


def method_label(config: Mapping) -> str:
    """``grid`` (a grid over sizes, no pruning), ``prune`` (a grid over the pruning strength only),
    ``supernet`` / ``halving`` (those strategies, with the sampler when it is not TPE: ``halving-qmc``;
    halving in several brackets of ``search.halving.n`` asked trials: ``halving-b14``), else the
    sampler's name (``tpe``, ``nsga2``, ``random``, ``qmc``, ``gp``)."""
    search = config.get("search", {})
    sampler = search.get("sampler", "tpe")
    strategy = search.get("strategy", "trials")
    if strategy in ("supernet", "halving"):
        n, total = (search.get("halving") or {}).get("n"), search.get("n_trials")
        if strategy == "halving" and isinstance(n, int) and isinstance(total, int) and n < total:
            strategy = f"halving-b{n}"
        return strategy if sampler == "tpe" else f"{strategy}-{sampler}"
    if sampler != "grid":
        return sampler
    space = search.get("space", {})
    varying = {k for k, v in space.items() if _varies(v)}
    return "prune" if varying == {"lambda_g"} else "grid"


def _families(config: Mapping) -> list[str]:
    """The student families a study searched: ``search.space.family`` when it has one, else ``student.family``."""
    spec = config.get("search", {}).get("space", {}).get("family")
    if isinstance(spec, Mapping):
        spec = spec.get("values")
    if spec is None:
        spec = [config.get("student", {}).get("family", "mlp")]
    order = ["mlp", "cnn"]
    fams = {str(f) for f in (spec if isinstance(spec, list) else [spec])}
    return sorted(fams, key=lambda f: order.index(f) if f in order else 9)


def setting_label(config: Mapping) -> str:
    """What the students were distilled from and which students were searched, e.g. ``MLP students, MNIST,
    mask 7px`` (``CNN students`` for a CNN-only space, ``MLP+CNN students`` for a space over both)."""
    data = config.get("data", {})
    return (
        f"{'+'.join(f.upper() for f in _families(config))} students, {str(data.get('dataset', '')).upper()}, "
        f"mask {data.get('mask_size', 0)}px"
    )
