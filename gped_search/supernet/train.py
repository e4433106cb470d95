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
from gped_search.metrics.cost import cost_figures
from gped_search.metrics.quality import evaluate, student_outputs
from gped_search.models import Arch, Net, build
from gped_search.seeds import derive_seed

from .slicing import check_slice, extract, sliced_outputs

__all__ = ["SandwichTrainer", "train_supernet", "score", "SCORED", "check_objectives"]

COST = ("params", "buffers", "bytes_fp32", "bytes_fp16", "bytes", "macs", "macs_conv_linear")
PROXY = {"latency_ms": "macs", "latency_p10_ms": "macs", "latency_p90_ms": "macs"}
"""Measured objectives ranked by an exact figure while scoring (timing thousands of sub-networks would
cost more than the supernet saves); the extracted trials measure them for real."""
QUALITY = ("kl", "kl_st", "prob_mae", "student_nll", "student_acc", "student_ece", "mi_mae")
SCORED = (*QUALITY, *COST, *PROXY)
"""Objectives a supernet can rank with inherited weights (plus ``<target>_mae``)."""


def check_objectives(names: Sequence[str]) -> None:
    """One line for an objective the supernet cannot score before the extracted trials measure it."""
    for n in names:
        if n not in SCORED and not n.endswith("_mae"):
            raise ConfigError(
                f"search.objectives.{n}: search.strategy supernet ranks configurations with inherited "
                f"weights by {', '.join(SCORED)} or <target>_mae; {n!r} needs each student trained alone "
                f"(use search.strategy trials)"
            )


class SandwichTrainer(StudentTrainer):
    """A supernet's trainer: each step's loss is the mean over the sandwich's sub-networks."""

    def __init__(
        self, model: Net, exps, cfg, pool: Sequence[Arch], smallest: Arch, *, random: int, seed: int, lr=None
    ):
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
    net = build(sup).to(p.device)
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


@torch.no_grad()
def score(p, teacher: TeacherResult, net: Net, sub: Arch) -> dict:
    """Selection-split quality of sub-network ``sub`` with the supernet's weights, and its exact cost."""
    b = p.bundle
    split, means = (b.val, teacher.val) if b.val is not None and teacher.val is not None else (b.test, teacher.test)
    small = extract(net, sub).eval()
    rec = evaluate(small, split.x, split.y, means, outputs=student_outputs(small, split.x))
    rec.update(cost_figures(small, split.x[:1]))
    rec["bytes"] = rec["bytes_fp32"]
    for k, v in PROXY.items():
        rec[k] = rec[v]
    return rec
