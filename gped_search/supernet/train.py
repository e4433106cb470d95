"""Distilling a weight-sharing student with the sandwich rule, and scoring sub-networks with inherited weights.

Each step of :class:`SandwichTrainer` distils the largest, the smallest and ``random`` sub-networks
drawn from a pool on one minibatch against the same targets, and averages their losses (one backward,
one Adam step on the shared weights). It runs inside the search's ordinary loop
(:func:`gped_search.distill.loop.train_students`), so cached means, bank replay and the learning curve
work as for any student.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from gped_search.distill.loop import TeacherResult, student_diverged, train_students
from gped_search.distill.student import StudentTrainer
from gped_search.errors import ConfigError
from gped_search.models import Arch, Net, build
from gped_search.seeds import derive_seed

from .slicing import add_depth_heads, check_slice, sliced_outputs

__all__ = ["SandwichTrainer", "train_supernet"]


class SandwichTrainer(StudentTrainer):
    """A supernet's trainer: each step's loss is the mean over the sandwich's sub-networks."""

    def __init__(self, model: Net, exps, cfg, pool: Sequence[Arch], smallest: Arch, *, random: int, seed: int, lr=None):
        if cfg.derivative_weight > 0:
            raise ConfigError("search.strategy supernet: distill.derivative_weight must be 0 (no derivative matching)")
        super().__init__(model, exps, cfg, lr=lr)
        for a in (*pool, smallest):
            check_slice(model.arch, a)
        self.pool, self.smallest = list(pool), smallest
        self.random = random
        self.gen = torch.Generator().manual_seed(derive_seed(seed, "sandwich"))

    def picks(self) -> list[Arch]:
        """This step's sub-networks: the whole supernet, the smallest and ``random`` from the pool."""
        drawn = torch.randint(len(self.pool), (self.random,), generator=self.gen).tolist()
        return [self.model.arch, self.smallest, *(self.pool[i] for i in drawn)]

    def loss(self, x: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        self.model.train()
        subs = self.picks()
        return sum(self.target_loss(sliced_outputs(self.model, a, x), targets) for a in subs) / len(subs)


def train_supernet(
    p,
    teacher: TeacherResult,
    sup: Arch,
    pool: Sequence[Arch],
    smallest: Arch,
    *,
    steps: int,
    random: int,
    seed: int,
    progress: bool = False,
) -> tuple[Net, dict]:
    """The supernet ``sup`` distilled for ``steps`` sandwich steps; returns it and a record
    (``seconds``, ``steps``, the learning ``curve``)."""
    torch.manual_seed(seed)
    net = add_depth_heads(build(sup).to(p.device), {len(a.hidden) for a in pool})
    trainer = SandwichTrainer(net, p.exps, p.cfg.distill, pool, smallest, random=random, seed=seed)
    t0 = time.perf_counter()
    out = train_students(
        [trainer],
        teacher,
        p.bundle.transfer,
        steps,
        p.cfg.distill,
        p.cfg.data,
        seed=seed,
        progress=progress,
        desc=f"supernet {sup.describe()}",
    )
    if out["diverged"]:
        raise student_diverged(trainer.steps)
    return net, {"seconds": time.perf_counter() - t0, "steps": steps, "curve": list(trainer.curve)}
