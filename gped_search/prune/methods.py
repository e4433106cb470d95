"""Pruning methods beside the paper's group LASSO: Torch-Pruning's importances and regularisers.

``prune.method`` picks how units are ranked and how the student is trained before pruning:

==============  ==================================================  ================================
method          trained with                                        units ranked by
==============  ==================================================  ================================
group_lasso     ``lambda_g * sum_g ||w_g||_2`` (the paper)          group L2 norm (threshold: max |w|)
magnitude       plain distillation                                  ``tp.importance.GroupMagnitudeImportance(p)``
taylor          plain distillation                                  ``tp.importance.GroupTaylorImportance``
                                                                    (|w * dL/dw| of the distillation loss)
group_norm      ``tp.pruner.GroupNormPruner.regularize`` each step  group magnitude (p = 2)
growing_reg     ``tp.pruner.GrowingRegPruner.regularize`` each      group magnitude (p = 2)
                step, ``update_reg`` every 10 steps
==============  ==================================================  ================================

Every method goes through the same dependency groups (:mod:`gped_search.prune.groups`): the heads
are never pruning roots, so the outputs keep their size. The ``budget`` rule removes the same
fraction of units from every hidden layer (Torch-Pruning's local pruning), choosing the fraction
whose parameter count is nearest to ``budget`` x the student's (:func:`keep_for_budget`); the count
after pruning is computed from the groups, without pruning (:func:`params_after`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn

from gped_search.choices import PruneMethod
from gped_search.prune.groups import UnitGroups

__all__ = [
    "METHODS",
    "REG_METHODS",
    "GRAD_METHODS",
    "REG_UPDATE_EVERY",
    "importance",
    "layer_importance",
    "params_after",
    "keep_for_budget",
    "round_keep_fractions",
    "round_ratio",
    "regulariser",
]

METHODS = tuple(m.value for m in PruneMethod)
"""Every pruning method (``prune.method``; :class:`gped_search.choices.PruneMethod`)."""
REG_METHODS = ("group_norm", "growing_reg")
"""Methods that regularise while the student is distilled."""
GRAD_METHODS = ("taylor",)
"""Methods that need the distillation loss's gradients at pruning time."""
REG_UPDATE_EVERY = 10
"""growing_reg: steps between ``update_reg`` calls (Torch-Pruning's examples use 10)."""


def importance(method: str, norm: int = 2) -> tp.importance.Importance:
    """Torch-Pruning's importance criterion of ``method`` (not group_lasso, which scores itself)."""
    if method == "taylor":
        return tp.importance.GroupTaylorImportance()
    if method == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=norm)
    if method in REG_METHODS:
        return tp.importance.GroupMagnitudeImportance(p=2)
    raise ValueError(f"unknown pruning method {method!r}; one of {', '.join(METHODS)}")


@torch.no_grad()
def layer_importance(
    dg: tp.DependencyGraph, groups: Sequence[UnitGroups], imp: tp.importance.Importance
) -> list[Tensor]:
    """Per prunable layer, one score per unit from ``imp`` over the layer's whole dependency group."""
    out = []
    for g in groups:
        group = dg.get_pruning_group(g.layer, g.prune_fn, list(range(g.n_units)))
        score = imp(group)
        if score is None or score.numel() != g.n_units:
            raise RuntimeError(f"Torch-Pruning gave no importance for {g.name}")
        out.append(score.detach().float())
    return out


def params_after(model: nn.Module, groups: Sequence[UnitGroups], removed: Sequence[int]) -> int:
    """Parameter count of ``model`` once ``removed[l]`` units of each layer are gone (no pruning done).

    Every unit of a layer owns the same number of positions along each (parameter, axis) its group
    touches (one row, one column, or H*W flattened columns), so the count depends only on how many.
    """
    cut: dict[tuple[int, int], int] = {}
    for g, r in zip(groups, removed):
        own: dict[tuple[int, int], int] = {}
        for s in g.slices:  # a (parameter, axis) counts once per layer
            own[(id(s.param), s.dim)] = r * (s.idx.numel() // g.n_units)
        for k, v in own.items():
            cut[k] = cut.get(k, 0) + v
    total = 0
    for p in model.parameters():
        total += math.prod(n - cut.get((id(p), d), 0) for d, n in enumerate(p.shape))
    return total


def _round_keep(n: int, fraction: float) -> int:
    return max(1, min(n, math.floor(fraction * n + 0.5)))


def round_keep_fractions(groups: Sequence[UnitGroups]) -> list[list[int]]:
    """Every distinct uniform schedule: keep ``round(s * n_l)`` units per layer for s = k / n_j."""
    ns = [g.n_units for g in groups]
    fractions = sorted({k / n for n in ns for k in range(1, n + 1)})
    seen, out = set(), []
    for s in fractions:
        keep = tuple(_round_keep(n, s) for n in ns)
        if keep not in seen:
            seen.add(keep)
            out.append(list(keep))
    return out


def keep_for_budget(model: nn.Module, groups: Sequence[UnitGroups], target_params: float) -> list[int]:
    """Units to keep per layer: the uniform schedule whose parameter count is nearest to ``target_params``
    (ties: the smaller model)."""
    ns = [g.n_units for g in groups]
    best, best_key = ns, None
    for keep in round_keep_fractions(groups):
        count = params_after(model, groups, [n - k for n, k in zip(ns, keep)])
        key = (abs(count - target_params), count)
        if best_key is None or key < best_key:
            best, best_key = keep, key
    return best


def round_ratio(ratio: float, rounds: int) -> float:
    """Per-round fraction of the remaining units so that ``rounds`` rounds remove ``ratio`` in all."""
    return 1.0 - (1.0 - ratio) ** (1.0 / rounds)


def _heads(model: nn.Module) -> list[nn.Module]:
    body = set(model.body.modules())
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and m not in body]


def regulariser(
    model: nn.Module, example_input: Tensor, method: str, reg: float, delta_reg: float = 1e-5
) -> Callable[[], None]:
    """A hook to call after each backward (before the optimiser step): Torch-Pruning's sparse-training
    regulariser of ``method`` adds its term to the gradients of the prunable groups (heads excluded)."""
    kw = dict(
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        reg=reg,
        ignored_layers=_heads(model),
        pruning_ratio=0.5,  # unused: the pruner object only regularises; pruning is ours
    )
    was_training = model.training
    example = example_input.detach().to(next(model.parameters()).device)
    with torch.enable_grad():
        if method == "group_norm":
            pruner = tp.pruner.GroupNormPruner(model, example, **kw)
        elif method == "growing_reg":
            pruner = tp.pruner.GrowingRegPruner(model, example, delta_reg=delta_reg, **kw)
        else:
            raise ValueError(f"method {method!r} has no regulariser; one of {', '.join(REG_METHODS)}")
    model.train(was_training)
    calls = [0]

    def hook() -> None:
        if method == "growing_reg" and calls[0] % REG_UPDATE_EVERY == 0:
            pruner.update_reg()
        calls[0] += 1
        pruner.regularize(model)

    return hook
