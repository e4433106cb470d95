"""The teacher chain's update rules (``teacher.sampler``), step-size schedules and initialisations.

Every rule moves the stacked parameters of all chains in place from the gradient ``g`` of the
*mean* minibatch NLL (N training images, prior precision lambda, step size eta):

* ``sgld`` (Welling & Teh 2011):  theta <- theta - (eta/2)(N g + lambda theta) + sqrt(eta) xi
* ``sgd``: the same loop without the noise (BDK's SGD baseline; it converges to the MAP estimate).
* ``psgld`` (Li et al. 2016, RMSprop-preconditioned SGLD):
  V <- alpha V + (1 - alpha) g (.) g,   G = 1 / (delta + sqrt(V)),
  theta <- theta - (eta/2) G (.) (N g + lambda theta) + sqrt(eta G) (.) xi.
  The correction term Gamma(theta) = sum_j d G_ij / d theta_j is **dropped**, as the paper does in
  its experiments (it is O((1 - alpha)) small for slowly varying V). V starts at the first
  minibatch's g (.) g rather than at 0, so the first steps are not inflated by 1 / delta.

xi is a standard normal draw per parameter. Schedules give eta_t for iteration t = 1, 2, ...
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "SAMPLERS",
    "INITS",
    "step_size_at",
    "sgld_update_",
    "UpdateRule",
    "make_rule",
    "init_params_",
]

SAMPLERS = ("sgld", "psgld", "sgd")
INITS = ("default", "xavier_in")


def _value(v):
    return getattr(v, "value", v)


def step_size_at(
    t: int,
    eta: float,
    schedule: str = "constant",
    t0: float = 1000.0,
    gamma: float = 0.55,
    every: int = 100_000,
    factor: float = 0.5,
) -> float:
    """eta_t: constant; polynomial eta (1 + t/t0)^-gamma; or step, eta * factor^floor((t-1)/every)
    (iterations 1..every run at eta, the next ``every`` at eta * factor, ...)."""
    schedule = _value(schedule)
    if schedule == "polynomial":
        return eta * (1.0 + t / t0) ** (-gamma)
    if schedule == "step":
        return eta * factor ** (max(t - 1, 0) // every)
    return eta


def sgld_update_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    noise: list[torch.Tensor] | None,
    eta: float,
    lam: float,
    n: int,
) -> None:
    """In place: theta <- theta - (eta/2)(n * grads + lam * theta) + sqrt(eta) * noise (no noise: SGD).

    ``grads`` are gradients of the *mean* minibatch NLL; ``noise`` standard normal draws.
    """
    torch._foreach_mul_(params, 1.0 - 0.5 * eta * lam)
    torch._foreach_add_(params, grads, alpha=-0.5 * eta * n)
    if noise is not None:
        torch._foreach_add_(params, noise, alpha=math.sqrt(eta))


class UpdateRule:
    """One sampler's update with its state (pSGLD's running mean square); see the module docstring."""

    def __init__(self, name: str = "sgld", alpha: float = 0.99, damping: float = 1e-5):
        name = _value(name)
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r} (one of {', '.join(SAMPLERS)})")
        self.name, self.alpha, self.damping = name, alpha, damping
        self.v: list[torch.Tensor] | None = None  # pSGLD only

    @property
    def noisy(self) -> bool:
        return self.name != "sgd"

    def apply_(
        self,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        noise: list[torch.Tensor] | None,
        eta: float,
        lam: float,
        n: int,
    ) -> None:
        if self.name != "psgld":
            sgld_update_(params, grads, noise if self.noisy else None, eta, lam, n)
            return
        if self.v is None:
            self.v = [g * g for g in grads]
        else:
            torch._foreach_mul_(self.v, self.alpha)
            torch._foreach_addcmul_(self.v, grads, grads, value=1.0 - self.alpha)
        precond = torch._foreach_sqrt(self.v)
        torch._foreach_add_(precond, self.damping)
        torch._foreach_reciprocal_(precond)  # G
        drift = torch._foreach_mul(params, lam)
        torch._foreach_add_(drift, grads, alpha=float(n))  # n g + lam theta
        torch._foreach_mul_(drift, precond)
        torch._foreach_add_(params, drift, alpha=-0.5 * eta)
        torch._foreach_sqrt_(precond)
        torch._foreach_mul_(precond, noise)  # sqrt(G) xi
        torch._foreach_add_(params, precond, alpha=math.sqrt(eta))

    def state_dict(self) -> dict:
        return {"v": None if self.v is None else [v.detach().cpu().clone() for v in self.v]}

    def load_state_dict(self, d: dict | None, device: torch.device | str = "cpu") -> None:
        v = (d or {}).get("v")
        self.v = None if v is None else [t.to(device) for t in v]


def make_rule(tcfg) -> UpdateRule:
    """The update rule a :class:`~gped_search.config.TeacherConfig` asks for."""
    return UpdateRule(tcfg.sampler, tcfg.psgld_alpha, tcfg.psgld_damping)


@torch.no_grad()
def init_params_(model: nn.Module, init: str = "default", magnitude: float = 2.34) -> nn.Module:
    """Re-initialise ``model`` in place. ``default`` keeps torch's layer defaults; ``xavier_in`` is
    MXNet's ``Xavier(rnd_type="uniform", factor_type="in", magnitude)`` as BDK's MNIST recipe uses it:
    weights U(-s, s) with s = sqrt(magnitude / fan_in), biases 0."""
    init = _value(init)
    if init == "default":
        return model
    if init != "xavier_in":
        raise ValueError(f"unknown init {init!r} (one of {', '.join(INITS)})")
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            s = math.sqrt(magnitude / fan_in)
            m.weight.uniform_(-s, s)
            if m.bias is not None:
                m.bias.zero_()
    return model
