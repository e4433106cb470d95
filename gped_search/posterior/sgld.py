"""Stochastic gradient Langevin dynamics (Welling & Teh 2011) over one or many chains at once.

    theta <- theta - (eta/2) (N grad mean_batch NLL + lambda theta) + N(0, eta I)

Chains are stacked along a leading axis and advanced by one vmapped computation (torch.func), not a
Python loop; each chain draws its own minibatch. All randomness comes from the sampler's own
``torch.Generator`` on the run's device.
"""

from __future__ import annotations

import math

import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from gped_search.errors import DivergenceError  # noqa: F401  (raised here; re-exported)
from gped_search.models import Arch, build
from gped_search.seeds import derive_seed

__all__ = ["SGLD", "DivergenceError", "step_size_at", "sgld_update_"]


def step_size_at(t: int, eta: float, schedule: str = "constant", t0: float = 1000.0, gamma: float = 0.55) -> float:
    """eta_t: constant, or polynomially decaying eta (1 + t/t0)^-gamma."""
    if getattr(schedule, "value", schedule) == "polynomial":
        return eta * (1.0 + t / t0) ** (-gamma)
    return eta


def sgld_update_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    noise: list[torch.Tensor],
    eta: float,
    lam: float,
    n: int,
) -> None:
    """In place: theta <- theta - (eta/2)(n * grads + lam * theta) + sqrt(eta) * noise.

    ``grads`` are gradients of the *mean* minibatch NLL; ``noise`` standard normal draws.
    """
    torch._foreach_mul_(params, 1.0 - 0.5 * eta * lam)
    torch._foreach_add_(params, grads, alpha=-0.5 * eta * n)
    torch._foreach_add_(params, noise, alpha=math.sqrt(eta))


class SGLD:
    """SGLD chains for a network ``arch`` on a labelled training set held on the device."""

    def __init__(
        self,
        arch: Arch,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        step_size: float,
        prior_precision: float,
        batch_size: int = 100,
        chains: int = 1,
        schedule: str = "constant",
        decay_t0: float = 1000.0,
        decay_gamma: float = 0.55,
        seed: int = 0,
    ):
        self.arch = arch
        self.x, self.y = x, y
        self.n = x.shape[0]
        self.device = x.device
        self.batch_size = min(batch_size, self.n)
        self.chains = chains
        self.eta, self.lam = step_size, prior_precision
        self.schedule, self.t0, self.gamma = schedule, decay_t0, decay_gamma
        self.t = 0
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.model = build(arch).to(self.device).eval()
        # Independent initialisations: one seeded default init per chain.
        inits = []
        for c in range(chains):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, "chain-init", c))
                inits.append({k: v.detach().to(self.device) for k, v in build(arch).named_parameters()})
        self.names = list(inits[0])
        self.params = [torch.stack([init[k] for init in inits]) for k in self.names]

        def nll(params, xb, yb):
            logits = functional_call(self.model, dict(zip(self.names, params)), (xb,))[0]
            return F.cross_entropy(logits, yb)

        self._grad = vmap(grad(nll), in_dims=(0, 0, 0))
        self._logits = vmap(
            lambda p, xb: functional_call(self.model, dict(zip(self.names, p)), (xb,))[0],
            in_dims=(0, None),
        )

    @property
    def step_size(self) -> float:
        return step_size_at(self.t, self.eta, self.schedule, self.t0, self.gamma)

    def capture_cuda_graph(self, warmup: int = 3) -> bool:
        """Record one step into a CUDA graph and replay it from then on (constant step size only).

        The step has fixed shapes and no host sync, and its randomness comes from the sampler's own
        generator, registered with the graph, so replays draw fresh minibatches and noise. The
        ``warmup`` eager steps (required before capture) are real SGLD iterations. Returns False,
        leaving the eager path in place, off CUDA, with a decaying schedule, or if capture fails.
        """
        if self.device.type != "cuda" or getattr(self.schedule, "value", self.schedule) != "constant":
            return False
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self.step()
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            graph.register_generator_state(self.gen)
            with torch.cuda.graph(graph):
                self._eager_step(self.eta)
        except Exception as e:  # an unsupported op or torch version: keep the eager loop
            import warnings

            warnings.warn(
                f"CUDA graph capture failed ({type(e).__name__}: {e}); using the eager step",
                stacklevel=2,
            )
            return False
        self._graph = graph
        return True

    @torch.no_grad()
    def step(self) -> None:
        """One SGLD iteration of every chain (no host synchronisation)."""
        self.t += 1
        if getattr(self, "_graph", None) is not None:
            self._graph.replay()
            return
        self._eager_step(self.step_size)

    @torch.no_grad()
    def _eager_step(self, eta: float) -> None:
        idx = torch.randint(0, self.n, (self.chains, self.batch_size), device=self.device, generator=self.gen)
        with torch.enable_grad():
            if self.chains == 1:  # plain autograd: same maths, a third of vmap's overhead on small nets
                leaves = [p[0].detach().requires_grad_() for p in self.params]
                loss = F.cross_entropy(
                    functional_call(self.model, dict(zip(self.names, leaves)), (self.x[idx[0]],))[0],
                    self.y[idx[0]],
                )
                grads = [g.unsqueeze(0) for g in torch.autograd.grad(loss, leaves)]
            else:
                grads = self._grad(self.params, self.x[idx], self.y[idx])
        noise = [torch.randn(p.shape, device=self.device, generator=self.gen) for p in self.params]
        sgld_update_(self.params, grads, noise, eta, self.lam, self.n)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, chunk: int = 8192, params: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of every chain (C, N, K) for inputs ``x``, in chunks."""
        params = self.params if params is None else params
        if params[0].shape[0] == 1:  # one chain: a direct call, without vmap's overhead
            one = dict(zip(self.names, (p[0] for p in params)))
            return torch.cat(
                [functional_call(self.model, one, (x[i : i + chunk],))[0] for i in range(0, x.shape[0], chunk)]
            )[None]
        return torch.cat([self._logits(params, x[i : i + chunk]) for i in range(0, x.shape[0], chunk)], dim=1)

    def is_finite(self) -> bool:
        """One host sync: are all chains' parameters finite?"""
        return bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all())

    def snapshot(self) -> list[torch.Tensor]:
        return [p.clone() for p in self.params]

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """One plain state dict per chain (loadable into ``build(arch)``)."""
        return [{k: p[c].detach().clone() for k, p in zip(self.names, self.params)} for c in range(self.chains)]
