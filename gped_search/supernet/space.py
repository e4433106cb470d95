"""The architectures of a search space, as Optuna parameters: every one when there are few, else a sample.

Only the architecture parameters of ``search.space`` (:data:`ARCH_PARAMS`) are listed here; the others
(``lambda_g``, ``lr``, ``precision``...) are left to the study's sampler when a chosen architecture is
enqueued as a trial. Parameters carry the names :func:`gped_search.search.space.suggest` gives them
(``width_0``, ``width_1``... or ``mlp_width`` when shared), so an enqueued trial reproduces them.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import optuna

from gped_search.config import StudentConfig, StudyConfig
from gped_search.errors import ConfigError
from gped_search.search.space import Spec, suggest

__all__ = ["ARCH_PARAMS", "ArchSpace"]

ARCH_PARAMS = ("family", "mlp_depth", "mlp_width", "m1", "m2")
"""Parameters of ``search.space`` that a supernet slices."""


def _count(spec: Spec) -> float:
    if spec.choices is not None:
        return len(spec.choices)
    if spec.is_int or spec.step:
        return math.floor((spec.high - spec.low) / (spec.step or 1) + 1e-9) + 1
    return math.inf  # a continuous range


def _draw(spec: Spec, rng: random.Random):
    if spec.choices is not None:
        return rng.choice(spec.choices)
    lo, hi = float(spec.low), float(spec.high)
    if spec.log:
        v = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        return min(int(spec.high), max(int(spec.low), round(v))) if spec.is_int else v
    if spec.is_int or spec.step:
        k = rng.randrange(int(_count(spec)))
        step = spec.step or 1
        return int(spec.low) + k * int(step) if spec.is_int else lo + k * step
    return rng.uniform(lo, hi)


def _ends(spec: Spec) -> tuple:
    vals = spec.choices if spec.choices is not None else (spec.low, spec.high)
    lo, hi = min(vals), max(vals)
    if spec.choices is None and spec.is_int:
        lo, hi = int(lo), int(hi) - (int(hi) - int(lo)) % int(spec.step or 1)
    elif spec.choices is None and spec.step:
        hi = lo + (_count(spec) - 1) * spec.step
    return lo, hi


@dataclass
class ArchSpace:
    """The architecture part of a study's space: ``cfg`` and its parsed ``specs`` (all of them)."""

    cfg: StudyConfig
    specs: dict[str, Spec]

    def __post_init__(self) -> None:
        self.arch = {k: v for k, v in self.specs.items() if k in ARCH_PARAMS and not v.fixed}
        if not self.arch:
            raise ConfigError(
                "search.strategy supernet: search.space has no architecture to slice; give mlp_width, "
                "mlp_depth, m1 or m2 a range or several values"
            )
        fam = self.specs.get("family")
        self.families = [
            getattr(f, "value", f) for f in (fam.choices if fam is not None else [self.cfg.student.family])
        ]

    # ------------------------------------------------------------------ dimensions per family

    def _depths(self) -> list[int]:
        d = self.specs.get("mlp_depth")
        return [len(self.cfg.student.widths)] if d is None else sorted({int(v) for v in d.values()})

    def _dims(self, family: str, depth: int | None) -> list[tuple[str, Spec]]:
        """(parameter name, spec) of one family (and MLP depth), in ``suggest``'s order."""
        if family == "cnn":
            return [(k, self.specs[k]) for k in ("m1", "m2") if k in self.specs]
        w = self.specs.get("mlp_width")
        if w is None:
            return []
        return [("mlp_width", w)] if w.shared else [(f"width_{i}", w) for i in range(depth)]

    def _heads(self, family: str, depth: int | None) -> dict:
        """The parameters fixing the family (and depth) that Optuna will ask for."""
        out = {}
        if "family" in self.specs and not self.specs["family"].fixed:
            out["family"] = family
        if family == "mlp" and "mlp_depth" in self.specs and not self.specs["mlp_depth"].fixed:
            out["mlp_depth"] = depth
        return out

    def _cells(self) -> list[tuple[str, int | None]]:
        cells = []
        for f in self.families:
            cells += [(f, d) for d in self._depths()] if f == "mlp" else [(f, None)]
        return cells

    def size(self) -> float:
        """Number of architectures (``inf`` with a continuous range)."""
        return sum(math.prod(_count(s) for _, s in self._dims(f, d)) for f, d in self._cells())

    # ------------------------------------------------------------------ configurations

    def configurations(self, limit: int, seed: int) -> list[dict]:
        """Every architecture when there are at most ``limit``, else ``limit`` distinct random ones; the
        smallest and the largest of each family are always included. Deterministic in ``seed``."""
        ends = [p for f in self.families for p in self.extremes(f)]
        if self.size() <= limit:
            out = []
            for f, d in self._cells():
                dims = self._dims(f, d)
                for combo in itertools.product(*(s.values() for _, s in dims)):
                    out.append({**self._heads(f, d), **{n: v for (n, _), v in zip(dims, combo)}})
            return out
        rng = random.Random(seed)
        seen, out = set(), []
        for p in ends:
            if (k := tuple(sorted(p.items()))) not in seen:
                seen.add(k)
                out.append(p)
        cells = self._cells()
        tries = 0
        while len(out) < limit and tries < 50 * limit:
            tries += 1
            f, d = rng.choice(cells)
            p = {**self._heads(f, d), **{n: _draw(s, rng) for n, s in self._dims(f, d)}}
            if (k := tuple(sorted(p.items()))) not in seen:
                seen.add(k)
                out.append(p)
        return out

    def extremes(self, family: str) -> tuple[dict, dict]:
        """The smallest and the largest architecture of ``family`` (shallowest / deepest MLP)."""
        depths = self._depths()
        lo_d, hi_d = (depths[0], depths[-1]) if family == "mlp" else (None, None)
        small = {**self._heads(family, lo_d), **{n: _ends(s)[0] for n, s in self._dims(family, lo_d)}}
        large = {**self._heads(family, hi_d), **{n: _ends(s)[1] for n, s in self._dims(family, hi_d)}}
        return small, large

    def student(self, params: dict) -> StudentConfig:
        """The student an architecture's parameters describe (as a trial that suggested them gets)."""
        arch_specs = {k: v for k, v in self.specs.items() if k in ARCH_PARAMS}
        return suggest(optuna.trial.FixedTrial(params), self.cfg, arch_specs).cfg.student

    @staticmethod
    def family_of(student: StudentConfig) -> str:
        return student.family.value
