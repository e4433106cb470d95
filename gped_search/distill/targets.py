"""Where a student's targets come from: the live chain, a running mean, the artifact's cache or bank.

Each source is called with transfer-set indices ``idx`` and the perturbed inputs ``x`` and returns
``{expectation name: target (B, dim)}`` on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.func import functional_call

from gped_search.posterior.expectations import Expectation

__all__ = [
    "expectation_targets",
    "OnlineTargets",
    "RunningMeanTargets",
    "CachedTargets",
    "BankTargets",
]


def expectation_targets(
    logits: torch.Tensor, exps: Sequence[Expectation], temperature: float = 1.0
) -> dict[str, torch.Tensor]:
    """Mean over the leading sample axis of g(logits) for every expectation; logits (S, B, K).

    A distillation temperature is part of the predictive expectation itself (see
    :func:`~gped_search.posterior.expectations.tempered`); ``temperature`` is kept for callers
    that pass it and is ignored.
    """
    return {e.name: e.fn(logits).mean(0) for e in exps}


class OnlineTargets:
    """The current sample of the live chain(s): g(x, theta_t), averaged over chains."""

    def __init__(self, logits_fn: Callable[[torch.Tensor], torch.Tensor], exps, temperature: float = 1.0):
        self.logits_fn, self.exps, self.temperature = logits_fn, tuple(exps), temperature

    def __call__(self, idx: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return expectation_targets(self.logits_fn(x), self.exps, self.temperature)


class RunningMeanTargets:
    """Per transfer example, the running mean of g over the samples seen so far for that example.

    ``inner`` gives single-sample targets: the live chain (:class:`OnlineTargets`) during sampling,
    or bank replay (:class:`BankTargets`) in search trials.
    """

    def __init__(self, inner: OnlineTargets | BankTargets, n_transfer: int, n_classes: int, device):
        self.inner = inner
        self.sums = {e.name: torch.zeros(n_transfer, e.out_dim(n_classes), device=device) for e in inner.exps}
        self.counts = torch.zeros(n_transfer, 1, device=device)

    def __call__(self, idx: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        current = self.inner(idx, x)
        # index_add_ handles indices drawn twice in one batch (sampling is with replacement).
        self.counts.index_add_(0, idx, torch.ones(idx.shape[0], 1, device=idx.device))
        out = {}
        for name, t in current.items():
            self.sums[name].index_add_(0, idx, t)
            out[name] = self.sums[name][idx] / self.counts[idx]
        return out


class CachedTargets:
    """Posterior means precomputed for every transfer example (the teacher artifact's cache)."""

    def __init__(self, means: dict[str, torch.Tensor]):
        self.means = means

    def __call__(self, idx: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in self.means.items()}


class BankTargets:
    """Online replay: g(x', theta_k) for a stored sample theta_k drawn uniformly from the bank."""

    def __init__(
        self,
        model: torch.nn.Module,
        bank: dict[str, torch.Tensor],
        exps,
        generator: torch.Generator,
        temperature: float = 1.0,
    ):
        self.model, self.bank, self.exps = model, bank, tuple(exps)
        self.size = next(iter(bank.values())).shape[0]
        self.gen, self.temperature = generator, temperature

    def __call__(self, idx: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        k = torch.randint(0, self.size, (1,), device=x.device, generator=self.gen)
        params = {name: v.index_select(0, k)[0] for name, v in self.bank.items()}
        with torch.no_grad():
            logits = functional_call(self.model, params, (x,))[0]
        return expectation_targets(logits[None], self.exps, self.temperature)
