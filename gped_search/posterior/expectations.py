"""Posterior expectations E_theta[g(x, theta)] as named functions of the teacher's logits.

Built in: ``predictive`` (the posterior predictive distribution, a softmax) and
``expected_entropy`` (the entropy of each sample's predictive distribution). Users register
more with :func:`register_expectation`; a study names them in ``distill.targets`` and imports the
module that registers them through ``distill.plugins``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

__all__ = [
    "Expectation",
    "register_expectation",
    "RANGES",
    "import_plugins",
    "get_expectation",
    "resolve",
    "registered",
    "entropy",
    "mutual_information",
    "PosteriorAccumulator",
    "tempered",
]


@dataclass(frozen=True)
class Expectation:
    """g(x, theta) given the teacher's logits (..., K) -> (..., dim)."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    dim: int | None  # None: the number of classes (a distribution over classes)
    positive: bool = True  # the student's head is not linear (softplus for ">= 0", sigmoid for "[0, 1]")
    range: str = "positive"  # "unit": in [0, 1] (sigmoid head); "positive": >= 0 (softplus); "real" (linear)

    def out_dim(self, n_classes: int) -> int:
        return n_classes if self.dim is None else self.dim


def entropy(probs: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """Shannon entropy in nats, safe at p = 0."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim, keepdim=keepdim)


def _expected_entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1, keepdim=True)


_REGISTRY: dict[str, Expectation] = {
    "predictive": Expectation("predictive", lambda z: F.softmax(z, -1), None, positive=False, range="real"),
    "expected_entropy": Expectation("expected_entropy", _expected_entropy, 1, positive=True, range="positive"),
}


RANGES = {
    "unit": "unit",
    "[0, 1]": "unit",
    "[0,1]": "unit",
    "probability": "unit",
    "positive": "positive",
    ">= 0": "positive",
    ">=0": "positive",
    "nonnegative": "positive",
    "real": "real",
    "any": "real",
}
"""How an expectation's values may be declared (``value_range``) and the student head each gets:
[0, 1] -> sigmoid, >= 0 -> softplus, real -> linear."""


def register_expectation(
    name: str,
    fn: Callable[[torch.Tensor], torch.Tensor],
    dim: int = 1,
    positive: bool = True,
    overwrite: bool = False,
    *,
    value_range: str | None = None,
) -> Expectation:
    """Register g by name. ``fn`` maps teacher logits (..., K) to (..., dim); keep it differentiable-free
    and vectorised (it runs on whole batches on the device). ``value_range`` declares the values g can
    take, and so the student's head: ``"[0, 1]"`` (a sigmoid head, e.g. a probability), ``">= 0"``
    (softplus, the default; an entropy) or ``"real"`` (linear); without it ``positive=False`` means real."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"expectation {name!r} is already registered")
    if dim < 1:
        raise ValueError("dim must be >= 1")
    if value_range is None:
        kind = "positive" if positive else "real"
    elif str(value_range).strip().lower() in RANGES:
        kind = RANGES[str(value_range).strip().lower()]
    else:
        raise ValueError(f"value_range {value_range!r}: use '[0, 1]', '>= 0' or 'real'")
    exp = Expectation(name, fn, dim, kind != "real", kind)
    _REGISTRY[name] = exp
    return exp


def registered() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_expectation(name: str) -> Expectation:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown expectation {name!r} (registered: {', '.join(_REGISTRY)}; add one with "
            f"register_expectation and list its module in distill.plugins)"
        ) from None


def import_plugins(modules: Iterable[str], folders: Iterable[str | Path] = ()) -> None:
    """Import each plugin module (``distill.plugins``). A module not found on ``sys.path`` is looked for
    in ``folders`` (the CLI gives the study file's folder and the current one), which then join
    ``sys.path`` (spawned workers inherit it). Raises :class:`ConfigError` in one line when a module is
    not found or fails while importing."""
    from gped_search.errors import ConfigError

    extra = [str(Path(f).resolve()) for f in folders]
    for mod in modules:
        try:
            importlib.import_module(mod)
            continue
        except ModuleNotFoundError as e:
            if e.name is None or not (mod == e.name or mod.startswith(e.name + ".")):
                raise ConfigError(f"distill.plugins: {mod!r} imports a missing module: {e}") from None
        except Exception as e:  # the plugin's own error (syntax, an exception at import)
            raise ConfigError(f"distill.plugins: importing {mod!r} failed: {type(e).__name__}: {e}") from None
        for folder in extra:
            if folder not in sys.path:
                sys.path.insert(0, folder)
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not (mod == e.name or mod.startswith(e.name + ".")):
                raise ConfigError(f"distill.plugins: {mod!r} imports a missing module: {e}") from None
            where = ", ".join(dict.fromkeys(extra)) or "the current folder"
            raise ConfigError(
                f"distill.plugins: cannot import {mod!r} ({e}); looked in {where} and on the Python path"
            ) from None
        except Exception as e:
            raise ConfigError(f"distill.plugins: importing {mod!r} failed: {type(e).__name__}: {e}") from None


def resolve(names: Iterable[str], plugins: Iterable[str] = ()) -> tuple[Expectation, ...]:
    """Import plugin modules (also from the current folder), then look the names up."""
    import_plugins(plugins, [Path.cwd()])
    return tuple(get_expectation(n) for n in names)


def tempered(exps: tuple[Expectation, ...], temperature: float) -> tuple[Expectation, ...]:
    """The expectations with the predictive taken at ``temperature``: E[softmax(f / T)].

    Distilling at T != 1 distils this tempered posterior predictive; the teacher's accumulators,
    the students' targets and the scores all use it, so training and scoring agree. Every other
    expectation stays at temperature 1.
    """
    if temperature == 1.0:
        return tuple(exps)
    return tuple(
        Expectation("predictive", lambda z, t=temperature: F.softmax(z / t, -1), None, positive=False, range="real")
        if e.name == "predictive"
        else e
        for e in exps
    )


def mutual_information(predictive: torch.Tensor, expected_entropy: torch.Tensor) -> torch.Tensor:
    """Epistemic uncertainty: H(E[p]) - E[H(p)], from a predictive distribution (N, K) and (N,) or (N, 1)."""
    return entropy(predictive) - expected_entropy.reshape(predictive.shape[0])


class PosteriorAccumulator:
    """Running sums of every expectation over posterior samples for fixed inputs, on the device.

    ``update`` takes logits with a leading sample axis (S, N, K) and adds fn(logits) summed over S;
    nothing leaves the device until ``means`` is read.
    """

    def __init__(self, n: int, n_classes: int, expectations: Iterable[Expectation], device):
        self.exps = tuple(expectations)
        self.sums = {e.name: torch.zeros(n, e.out_dim(n_classes), device=device) for e in self.exps}
        self.count = 0

    def update(self, logits: torch.Tensor) -> None:
        for e in self.exps:
            self.sums[e.name] += e.fn(logits).sum(0)
        self.count += logits.shape[0]

    def means(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            raise RuntimeError("no posterior samples were accumulated (is burn_in >= iterations?)")
        return {k: v / self.count for k, v in self.sums.items()}
