"""The one prune -> fine-tune schedule: :func:`prune_schedule` for a lockstep group of students
(single trials, batches, ``gped-search distill`` and the benchmarks all come through it), and
:func:`prune_and_finetune` for one model."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from gped_search.config import DistillConfig, PruneConfig
from gped_search.distill.loop import TeacherResult, accumulate_gradients
from gped_search.models import Net
from gped_search.prune import GRAD_METHODS, prune_model
from gped_search.prune.methods import round_ratio
from gped_search.seeds import derive_seed

from .context import Prepared, make_trainer
from .lockstep import Member, train_together

__all__ = ["prune_round", "finetune_split", "finetune_seed", "prune_schedule", "prune_and_finetune"]


def unit_widths(model: Net) -> list[int]:
    """Units (output features or channels) of each linear or convolutional layer of ``model``'s body."""
    layers = (lay for lay in model.body if isinstance(lay, (torch.nn.Linear, torch.nn.Conv2d)))
    return [m.out_features if isinstance(m, torch.nn.Linear) else m.out_channels for m in layers]


def finetune_split(prune: PruneConfig) -> list[int]:
    """Fine-tuning steps after each round: ``finetune_steps`` shared out, the remainder first."""
    n, r = divmod(prune.finetune_steps, prune.rounds)
    return [n + (1 if i < r else 0) for i in range(prune.rounds)]


def finetune_seed(seed: int, r: int) -> int:
    """The minibatch stream of the fine-tuning after round ``r`` (0-based)."""
    return derive_seed(seed, "fine-tune") if r == 0 else derive_seed(seed, "fine-tune-round", r)


def prune_round(
    model: Net, p: Prepared, prune: PruneConfig, r: int, record: dict | None, teacher: TeacherResult, seed: int
) -> tuple[dict, int]:
    """Round ``r`` (0-based) of ``prune``'s schedule on ``model``: the pruning record so far and the
    fine-tuning steps that follow this round.

    Round r of R keeps ``budget ** ((r+1)/R)`` of the original parameters (budget rule) or removes
    the per-round fraction ``1 - (1 - ratio) ** (1/R)`` of each layer's units (ratio rule), so the
    last round lands on the requested size.
    """
    before = unit_widths(model)
    params0 = record["params_before"] if record else sum(q.numel() for q in model.parameters())
    method = prune.method.value
    if method in GRAD_METHODS:
        grads = make_trainer(model, p, p.cfg.distill)  # the penalty-free distillation loss
        accumulate_gradients(
            grads, teacher, p.bundle.transfer, prune.taylor_batches, p.cfg.distill, p.cfg.data, seed=seed, index=r
        )
    res = prune_model(
        model,
        p.bundle.test.x[:1],
        prune.rule.value,
        tau=prune.tau,
        ratio=round_ratio(prune.ratio, prune.rounds),
        method=method,
        budget=prune.budget,
        target_params=params0 * prune.budget ** ((r + 1) / prune.rounds),
        norm=prune.norm,
    )
    model.zero_grad(set_to_none=True)
    steps = finetune_split(prune)[r] if sum(res.removed) > 0 or record else 0
    if record is None:
        record = {
            "method": method,
            "rule": prune.rule.value,
            "tau": prune.tau,
            "ratio": prune.ratio,
            "budget": prune.budget,
            "rounds": prune.rounds,
            "units_before": before,
            "units_removed": [0] * len(before),
            "history": [],
            "finetune_steps": 0,
            "params_before": res.params_before,
        }
    record["units_kept"] = res.kept
    record["units_removed"] = [a + b for a, b in zip(record["units_removed"], res.removed)]
    record["history"] = record["history"] + res.history
    record["params_after"] = res.params_after
    record["params_kept_fraction"] = res.params_after / record["params_before"]
    record["finetune_steps"] += steps
    return record, steps


def prune_schedule(
    members: Sequence[Member],
    p: Prepared,
    teacher: TeacherResult,
    seed: int,
    *,
    progress: bool = False,
    after_prune: Callable[[Member, int], None] | None = None,
) -> None:
    """Each member's ``prune.rounds`` rounds: prune (``prune.method`` and rule), then fine-tune by
    penalty-free distillation at ``distill.lr * prune.finetune_lr_factor``.

    Round by round, every member still alive is pruned; those whose round is followed by the same
    number of fine-tuning steps are fine-tuned together on the stream :func:`finetune_seed` of
    ``seed``. Each member's ``pruning`` record grows and its pruning time is charged to it; a member
    whose pruning or fine-tuning fails gets the error and drops out. ``after_prune(member, r)`` sees
    a member after round ``r``'s pruning, before its fine-tuning.
    """
    for r in range(max((m.prune.rounds for m in members), default=0)):
        by_steps: dict[int, list[Member]] = {}
        for m in members:
            if m.error is not None or r >= m.prune.rounds:
                continue
            t0 = time.perf_counter()
            try:
                m.pruning, steps = prune_round(m.model, p, m.prune, r, m.pruning, teacher, seed)
            except Exception as e:  # noqa: BLE001 - one student's failure, recorded on its member
                m.error = e
                continue
            finally:
                m.seconds += time.perf_counter() - t0
            if after_prune is not None:
                after_prune(m, r)
            if steps > 0:
                by_steps.setdefault(steps, []).append(m)
        for n, group in by_steps.items():
            trainers = [
                make_trainer(m.model, p, m.distill, lr=m.distill.lr * m.prune.finetune_lr_factor) for m in group
            ]
            train_together(group, trainers, p, teacher, n, finetune_seed(seed, r), progress=progress, desc="fine-tune")


def prune_and_finetune(
    model: Net,
    teacher: TeacherResult,
    p: Prepared,
    prune: PruneConfig,
    dcfg: DistillConfig,
    seed: int,
    progress: bool = False,
    *,
    after_prune: Callable[[Member, int], None] | None = None,
) -> dict:
    """:func:`prune_schedule` for one model (fine-tuned with ``dcfg``): its pruning record; a failure
    (a diverging fine-tune) is raised."""
    member = Member(model, dcfg, prune)
    prune_schedule([member], p, teacher, seed, progress=progress, after_prune=after_prune)
    if member.error is not None:
        raise member.error
    return member.pruning
