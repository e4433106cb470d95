"""Adversarial robustness: FGSM and PGD (L-infinity, inputs in [0, 1]) for teacher, students, baseline.

A model is attacked through its predictive probabilities ``probs_fn(x) -> (B, C)``; the loss is the
negative log-likelihood of the true label, -log p(y | x). For the SGLD teacher the predictive is the
posterior mean over its sample bank, (1/S) sum_s softmax f_s(x), so the attack's gradient is that of
the Bayesian model averaged prediction (not of one sample); students use their predictive head, the
deterministic baseline its softmax.

* FGSM (Goodfellow et al., 2015): x' = clip_[0,1](x + eps * sign(grad_x loss)).
* PGD (Madry et al., 2018): a uniform random start in the eps-ball, then ``steps`` signed-gradient
  steps of size ``alpha`` (default 2.5 eps / steps), each projected onto the eps-ball around x and
  onto [0, 1].

:func:`attack_record` reports accuracy under attack and how the predictive entropy and the mutual
information (where the model gives one) move.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.func import functional_call, vmap
from torch.nn import functional as F

__all__ = [
    "ATTACKS",
    "fgsm",
    "pgd",
    "attack",
    "teacher_probs_fn",
    "student_probs_fn",
    "teacher_mi_fn",
    "student_mi_fn",
    "baseline_probs_fn",
    "entropy",
    "attack_record",
]

ATTACKS = ("fgsm", "pgd")
ProbsFn = Callable[[Tensor], Tensor]


def _nll_grad(probs_fn: ProbsFn, x: Tensor, y: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        p = probs_fn(x)
        loss = -torch.log(p.gather(1, y[:, None]).clamp_min(1e-12)).sum()
        (g,) = torch.autograd.grad(loss, x)
    return g


def fgsm(probs_fn: ProbsFn, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """One signed-gradient step of size ``eps``, clipped to [0, 1]."""
    return (x + eps * _nll_grad(probs_fn, x, y).sign()).clamp(0.0, 1.0).detach()


def pgd(
    probs_fn: ProbsFn,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient descent on -log p(y|x) in the L-infinity ball of radius ``eps`` and in [0, 1]."""
    alpha = 2.5 * eps / steps if alpha is None else alpha
    lo, hi = (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)
    x_adv = x.detach().clone()
    if random_start:
        noise = torch.rand(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        x_adv = torch.minimum(torch.maximum(x_adv + (2 * noise - 1) * eps, lo), hi)
    for _ in range(steps):
        x_adv = x_adv + alpha * _nll_grad(probs_fn, x_adv, y).sign()
        x_adv = torch.minimum(torch.maximum(x_adv, lo), hi).detach()
    return x_adv


def attack(name: str, probs_fn: ProbsFn, x: Tensor, y: Tensor, eps: float, *, steps: int = 10, seed: int = 0) -> Tensor:
    """Adversarial inputs by ``name`` (fgsm | pgd), in chunks of 1,000 inputs."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; one of {', '.join(ATTACKS)}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    out = []
    for i in range(0, x.shape[0], 1000):
        xi, yi = x[i : i + 1000], y[i : i + 1000]
        out.append(fgsm(probs_fn, xi, yi, eps) if name == "fgsm" else pgd(probs_fn, xi, yi, eps, steps, generator=gen))
    return torch.cat(out)


def teacher_probs_fn(model: torch.nn.Module, bank: dict[str, Tensor], temperature: float = 1.0) -> ProbsFn:
    """The posterior predictive over the bank's samples: (1/S) sum_s softmax(f_s(x) / T)."""

    def probs(x: Tensor) -> Tensor:
        def one(params):
            return F.softmax(functional_call(model, params, (x,))[0] / temperature, -1)

        return vmap(one)(bank).mean(0)

    return probs


def teacher_mi_fn(model: torch.nn.Module, bank: dict[str, Tensor], temperature: float = 1.0) -> Callable:
    """Mutual information over the bank: H(mean_s p_s) - mean_s H(p_s)."""

    def mi(x: Tensor) -> Tensor:
        def one(params):
            return F.softmax(functional_call(model, params, (x,))[0] / temperature, -1)

        ps = vmap(one)(bank)
        return entropy(ps.mean(0)) - entropy(ps).mean(0)

    return mi


def student_mi_fn(model: torch.nn.Module) -> Callable | None:
    """A student's MI, H(predictive) - its expected-entropy head (None without that head)."""
    if "expected_entropy" not in model.arch.head_names:
        return None

    def mi(x: Tensor) -> Tensor:
        out = model.named_outputs(x)
        return entropy(F.softmax(out["predictive"], -1)) - out["expected_entropy"].reshape(-1)

    return mi


def student_probs_fn(model: torch.nn.Module) -> ProbsFn:
    return lambda x: F.softmax(model.named_outputs(x)["predictive"], -1)


def baseline_probs_fn(model: torch.nn.Module) -> ProbsFn:
    return lambda x: F.softmax(model(x)[0], -1)


def entropy(p: Tensor) -> Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


def attack_record(
    probs_fn: ProbsFn,
    x: Tensor,
    y: Tensor,
    eps_values: Sequence[float],
    attacks: Sequence[str] = ATTACKS,
    *,
    steps: int = 10,
    seed: int = 0,
    mi_fn: Callable[[Tensor], Tensor] | None = None,
) -> list[dict]:
    """Rows (attack, eps, accuracy, mean entropy, mean MI) for clean inputs (eps 0) and each attack/eps.

    ``mi_fn(x)`` gives the per-input mutual information where the model has one (the teacher over its
    bank, a student from its expected-entropy head)."""

    def row(name: str, eps: float, xa: Tensor) -> dict:
        with torch.no_grad():
            p = torch.cat([probs_fn(xa[i : i + 1000]) for i in range(0, xa.shape[0], 1000)])
            mi = torch.cat([mi_fn(xa[i : i + 1000]) for i in range(0, xa.shape[0], 1000)]) if mi_fn else None
        return {
            "attack": name,
            "eps": eps,
            "accuracy": float((p.argmax(1) == y).float().mean()),
            "entropy": float(entropy(p).mean()),
            "mi": float(mi.mean()) if mi is not None else float("nan"),
            "linf": float((xa - x).abs().amax()) if eps else 0.0,
        }

    rows = [row("clean", 0.0, x)]
    for name in attacks:
        for eps in eps_values:
            rows.append(row(name, eps, attack(name, probs_fn, x, y, eps, steps=steps, seed=seed)))
    return rows
