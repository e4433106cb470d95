"""The teacher's Markov chain over one or many chains at once: SGLD (Welling & Teh 2011)

    theta <- theta - (eta/2) (N grad mean_batch NLL + lambda theta) + N(0, eta I)

or another rule of :mod:`gped_search.posterior.samplers` (pSGLD, noiseless SGD). Chains are stacked
along a leading axis and advanced by one vmapped computation (torch.func), not a Python loop; each
chain draws its own minibatch. All randomness comes from the sampler's own ``torch.Generator`` on
the run's device, drawn through :class:`~gped_search.posterior.draws.Draws` (optionally ahead, on a
second CPU thread, with bitwise the same result).
"""

from __future__ import annotations

import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from gped_search.errors import DivergenceError  # noqa: F401  (raised here; re-exported)
from gped_search.models import Arch, build
from gped_search.posterior.draws import Draws
from gped_search.posterior.samplers import UpdateRule, init_params_, sgld_update_, step_size_at
from gped_search.seeds import derive_seed

__all__ = ["SGLD", "DivergenceError", "step_size_at", "sgld_update_"]


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
        decay_every: int = 100_000,
        decay_factor: float = 0.5,
        sampler: str = "sgld",
        psgld_alpha: float = 0.99,
        psgld_damping: float = 1e-5,
        init: str = "default",
        init_magnitude: float = 2.34,
        noise_thread: bool = False,
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
        self.decay_every, self.decay_factor = decay_every, decay_factor
        self.rule = UpdateRule(sampler, psgld_alpha, psgld_damping)
        self.t = 0
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.model = build(arch).to(self.device).eval()
        # Independent initialisations: one seeded default init per chain.
        inits = []
        for c in range(chains):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, "chain-init", c))
                net = init_params_(build(arch), init, init_magnitude)
                inits.append({k: v.detach().to(self.device) for k, v in net.named_parameters()})
        self.names = list(inits[0])
        self.params = [torch.stack([init[k] for init in inits]) for k in self.names]
        self.draws = Draws(
            self.gen,
            self.n,
            chains,
            self.batch_size,
            [p.shape for p in self.params],
            noisy=self.rule.noisy,
            ahead=noise_thread,
        )

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
        return step_size_at(self.t, self.eta, self.schedule, self.t0, self.gamma, self.decay_every, self.decay_factor)

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
        idx, noise = self.draws.next()
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
        self.rule.apply_(self.params, grads, noise, eta, self.lam, self.n)

    def rng_state(self) -> torch.Tensor:
        """The generator state before the next iteration's draws (what a checkpoint stores)."""
        return self.draws.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.draws.set_state(state)

    def close(self) -> None:
        """Stop the draws' producer thread, if any (the chain can go on afterwards)."""
        self.draws.close()

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
