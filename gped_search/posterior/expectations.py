"""Posterior expectations E_theta[g(x, theta)] as named functions of the teacher's logits.

Built in: ``predictive`` (the posterior predictive distribution, a softmax) and
``expected_entropy`` (the entropy of each sample's predictive distribution). Users register
more with :func:`register_expectation`; a study names them in ``distill.targets`` and imports the
module that registers them through ``distill.plugins``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

__all__ = [
    "Expectation",
    "register_expectation",
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
    positive: bool = True  # the student's head for it is softplus-positive

    def out_dim(self, n_classes: int) -> int:
        return n_classes if self.dim is None else self.dim


def entropy(probs: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """Shannon entropy in nats, safe at p = 0."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim, keepdim=keepdim)


def _expected_entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1, keepdim=True)


_REGISTRY: dict[str, Expectation] = {
    "predictive": Expectation("predictive", lambda z: F.softmax(z, -1), None, positive=False),
    "expected_entropy": Expectation("expected_entropy", _expected_entropy, 1, positive=True),
}


def register_expectation(
    name: str,
    fn: Callable[[torch.Tensor], torch.Tensor],
    dim: int = 1,
    positive: bool = True,
    overwrite: bool = False,
) -> Expectation:
    """Register g by name. ``fn`` maps teacher logits (..., K) to (..., dim); keep it differentiable-free
    and vectorised (it runs on whole batches on the device)."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"expectation {name!r} is already registered")
    if dim < 1:
        raise ValueError("dim must be >= 1")
    exp = Expectation(name, fn, dim, positive)
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


def resolve(names: Iterable[str], plugins: Iterable[str] = ()) -> tuple[Expectation, ...]:
    """Import plugin modules, then look the names up."""
    for mod in plugins:
        importlib.import_module(mod)
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
        Expectation("predictive", lambda z, t=temperature: F.softmax(z / t, -1), None, positive=False)
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
