"""The search space of a study file (``search.space``).

Pure validation: no Optuna (``gped_search.search.space.suggest`` samples a trial from these specs).

``search.space`` maps a parameter name to a spec:

* a list -> categorical choice (``family: [mlp, cnn]``, ``lambda_g: [0, 1e-4, 1e-3]``);
* ``{low, high}`` -> a range; integers when both bounds are integers, else floats; ``log: true``
  samples on a log scale, ``step: s`` quantises;
* a scalar -> fixed value.

Parameters (anything not named keeps the study's ``student`` / ``prune`` / ``distill`` value):

==============  ===========================================================================
family          student family (mlp | cnn)
mlp_depth       number of MLP hidden layers
mlp_width       width of each MLP hidden layer (sampled per layer as ``width_0``, ``width_1``...;
                ``shared: true`` samples one width for every layer, as in the paper's grid)
m1, m2          CNN conv-channel and fully-connected multiplication factors
lambda_g        group-LASSO strength (0 = no pruning); with ``prune_on``, sampled only when it is true,
                so a log-scale range ``{low: 1e-5, high: 1e-1, log: true}`` works for model-based samplers
prune_on        [true, false]: whether the student is pruned at all (off: lambda_g = 0)
method          pruning method (group_lasso | magnitude | taylor | group_norm | growing_reg)
rule            pruning rule (threshold | ratio | budget)
tau, ratio      pruning threshold / per-layer fraction
budget          fraction of the student's parameters kept (rule budget)
reg, rounds     regulariser strength (group_norm, growing_reg) / prune -> fine-tune rounds
lr, dropout     student learning rate and dropout
derivative_weight, relational_weight
                derivative matching and relational distillation weights (0 = off)
precision       the student as deployed (fp32 | int8: ONNX Runtime quantization)
==============  ===========================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gped_search.choices import Precision, PruneMethod, PruneRule, StudentFamily
from gped_search.errors import ConfigError

from .schema_chain import check

if TYPE_CHECKING:
    from .schema import StudyConfig

__all__ = [
    "GRID_MAX",
    "check_grid_size",
    "PARAMS",
    "Spec",
    "parse_space",
    "grid_space",
    "precisions",
]

PARAMS = (
    "family",
    "mlp_depth",
    "mlp_width",
    "m1",
    "m2",
    "lambda_g",
    "prune_on",
    "method",
    "rule",
    "tau",
    "ratio",
    "budget",
    "reg",
    "rounds",
    "lr",
    "dropout",
    "derivative_weight",
    "relational_weight",
    "precision",
)
"""Valid names under ``search.space``."""

_INT_PARAMS = {"mlp_depth", "mlp_width", "rounds"}
_CATEGORICAL_ONLY = {
    "family": {m.value for m in StudentFamily},
    "rule": {r.value for r in PruneRule},
    "method": {m.value for m in PruneMethod},
    "precision": {p.value for p in Precision},
    "prune_on": {True, False},
}
_POSITIVE = {"mlp_depth", "mlp_width", "m1", "m2", "lr", "rounds"}


@dataclass(frozen=True)
class Spec:
    name: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    is_int: bool = False
    shared: bool = False

    @property
    def fixed(self) -> bool:
        return self.choices is not None and len(self.choices) == 1

    def values(self) -> list:
        """Every value of this spec, for the grid sampler (ranges need an integer step)."""
        if self.choices is not None:
            return list(self.choices)
        if self.is_int:
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.step:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9))
            return [self.low + i * self.step for i in range(n + 1)]
        raise ConfigError(f"search.space.{self.name}: the grid sampler needs a list of values or a step")


def _spec(name: str, raw: Any) -> Spec:
    where = f"search.space.{name}"
    if isinstance(raw, dict):
        unknown = set(raw) - {"low", "high", "log", "step", "shared", "values"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; valid: low, high, log, step, shared, values")
        shared = bool(raw.get("shared", False))
        if "values" in raw:
            return replace(_spec(name, raw["values"]), shared=shared)
        if "low" not in raw or "high" not in raw:
            raise ConfigError(f"{where}: a range needs both low and high")
        low, high = raw["low"], raw["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise ConfigError(f"{where}: low and high must be numbers")
        if name in _CATEGORICAL_ONLY:
            raise ConfigError(f"{where}: must be a list of {sorted(_CATEGORICAL_ONLY[name])}")
        if not low <= high:
            raise ConfigError(f"{where}: low ({low}) must be <= high ({high})")
        log = bool(raw.get("log", False))
        if log and low <= 0:
            raise ConfigError(f"{where}: log scale needs low > 0")
        step = raw.get("step")
        if step is not None and (not isinstance(step, (int, float)) or step <= 0):
            raise ConfigError(f"{where}: step must be a positive number")
        if log and step is not None:
            raise ConfigError(f"{where}: log and step cannot be combined")
        is_int = name in _INT_PARAMS or (
            isinstance(low, int)
            and isinstance(high, int)
            and name != "lambda_g"
            and name not in {"m1", "m2", "lr", "tau", "ratio", "dropout"}
        )
        if is_int and not (float(low).is_integer() and float(high).is_integer()):
            raise ConfigError(f"{where}: integer bounds expected")
        spec = Spec(name, low=low, high=high, log=log, step=step, is_int=is_int, shared=shared)
        _check_value(spec, low)
        _check_value(spec, high)
        return spec
    choices = tuple(raw) if isinstance(raw, (list, tuple)) else (raw,)
    if not choices:
        raise ConfigError(f"{where}: empty list of choices")
    spec = Spec(name, choices=choices)
    for c in choices:
        _check_value(spec, c)
    return spec


def _check_value(spec: Spec, v: Any) -> None:
    where = f"search.space.{spec.name}"
    if spec.name in _CATEGORICAL_ONLY:
        if v not in _CATEGORICAL_ONLY[spec.name]:
            raise ConfigError(f"{where}: {v!r} is not one of {sorted(_CATEGORICAL_ONLY[spec.name])}")
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{where}: {v!r} is not a number")
    if spec.name in _INT_PARAMS and not float(v).is_integer():
        raise ConfigError(f"{where}: {v!r} is not an integer")
    if spec.name in _POSITIVE and v <= 0:
        raise ConfigError(f"{where}: {v!r} must be > 0")
    if spec.name in {"lambda_g", "tau", "reg", "derivative_weight", "relational_weight"} and v < 0:
        raise ConfigError(f"{where}: {v!r} must be >= 0")
    if spec.name in {"ratio", "dropout"} and not 0 <= v < 1:
        raise ConfigError(f"{where}: {v!r} must be in [0, 1)")
    if spec.name == "budget" and not 0 < v <= 1:
        raise ConfigError(f"{where}: {v!r} must be in (0, 1]")


def parse_space(space: dict) -> dict[str, Spec]:
    """Validate ``search.space``; unknown parameter names are refused with the valid ones."""
    if not isinstance(space, dict):
        raise ConfigError("search.space must be a mapping of parameter -> list | {low, high} | value")
    unknown = [k for k in space if k not in PARAMS]
    if unknown:
        raise ConfigError(f"search.space: unknown parameter(s) {unknown}; valid: {', '.join(PARAMS)}")
    return {k: _spec(k, v) for k, v in space.items()}


def precisions(cfg: StudyConfig) -> set[str]:
    """The precisions a study's trials may have (``search.space.precision``, else ``student.precision``)."""
    raw = (cfg.search.space or {}).get("precision", cfg.student.precision.value)
    raw = raw.get("values", raw) if isinstance(raw, dict) else raw
    return {getattr(v, "value", v) for v in (raw if isinstance(raw, (list, tuple)) else [raw])}


def grid_space(specs: dict[str, Spec], default_depth: int) -> dict[str, list]:
    """Optuna ``GridSampler`` search space: every parameter name a trial may suggest.

    Give one family per grid study: conditional parameters of the other family would multiply
    the grid with points that never differ.
    """
    grid: dict[str, list] = {}
    for name, spec in specs.items():
        if spec.fixed:
            continue
        if name == "mlp_width" and not spec.shared:
            depth = specs.get("mlp_depth")
            max_depth = int(max(depth.values())) if depth else default_depth
            for i in range(max_depth):
                grid[f"width_{i}"] = spec.values()
        else:
            grid[name] = spec.values()
    return grid


GRID_MAX = 100_000
"""Most grid points a grid study may have (Optuna's GridSampler lists them all up front)."""


def check_grid_size(specs: dict, default_depth: int) -> None:
    """Refuse a grid too large to list before listing it (a range of 1..10**9 would exhaust memory)."""
    counts: dict[str, int] = {}
    for name, s in specs.items():
        if s.choices is not None:
            counts[name] = len(s.choices)
        elif s.is_int or s.step:
            n = math.floor((s.high - s.low) / (s.step or 1) + 1e-9) + 1
            check(
                n <= GRID_MAX,
                f"search.space.{name}: {n} grid values (at most {GRID_MAX}); use a larger step",
            )
            counts[name] = max(1, n)
    total, depth = 1, default_depth
    if "mlp_depth" in specs and "mlp_depth" in counts:
        d = specs["mlp_depth"]
        depth = int(max(d.choices)) if d.choices is not None else int(d.high)
    for name, n in counts.items():
        if n <= 1:
            continue
        for _ in range(depth if name == "mlp_width" and not specs[name].shared else 1):
            total *= n
            check(
                total <= GRID_MAX,
                f"search.space: more than {GRID_MAX} grid points; fewer values or a larger step",
            )
