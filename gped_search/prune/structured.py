"""Structured pruning: really remove hidden units / conv channels with Torch-Pruning.

Which units go (per prunable hidden layer, see :mod:`gped_search.prune.groups`):

* ``rule="threshold"``: every unit whose score is ``<= tau``;
* ``rule="ratio"``: the ``floor(ratio * n)`` units with the smallest score (stable ties: lower
  index first);
* ``rule="budget"``: the same fraction of units in every layer, the one whose parameter count is
  nearest to ``target_params`` (default ``budget`` x the model's count; see
  :func:`gped_search.prune.methods.keep_for_budget`), smallest scores first.

The score (``score=``) is one of

* ``"incoming_max"`` -- max |w| over the unit's incoming weights and bias. ``<= tau`` means "all
  incoming |w| <= tau", the reference's rule (default for ``threshold``, with ``tau = 1e-3``);
* ``"incoming_l2"`` -- L2 norm of the incoming weights and bias;
* ``"group_l2"`` -- L2 norm of the whole group that the penalty shrinks (incoming weights, bias
  and the consumer's input columns) (default for ``ratio``).

With ``method`` other than ``group_lasso`` the score is Torch-Pruning's importance of that method
(:mod:`gped_search.prune.methods`). A layer is never emptied: if every unit qualifies, the highest-scoring one stays.

Removing a unit whose incoming weights and bias are zero is exact (ReLU(0) = 0 feeds nothing into
the next layer); :func:`mask_model` builds that masked network for comparison. Pruning replaces
parameter tensors, so build optimizers (and groups) after pruning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gped_search.models.nets import arch_of
from gped_search.prune.groups import (
    UnitGroups,
    dependency_graph,
    safe_sqrt,
    unit_groups,
    unit_groups_from_graph,
)
from gped_search.prune.methods import importance, keep_for_budget, layer_importance

__all__ = ["PruneResult", "SCORES", "unit_scores", "select_units", "prune_model", "mask_model"]

SCORES = ("incoming_max", "incoming_l2", "group_l2")
_DEFAULT_SCORE = {"threshold": "incoming_max", "ratio": "group_l2", "budget": "group_l2"}


@dataclass
class PruneResult:
    """Outcome of :func:`prune_model`; lists are per prunable layer in forward order."""

    model: nn.Module
    kept: list[int]
    removed: list[int]
    history: list = field(default_factory=list)  # Torch-Pruning's pruning_history(), plain lists
    layers: list[str] = field(default_factory=list)
    removed_idxs: list[list[int]] = field(default_factory=list)  # original unit indices removed
    rule: str = "threshold"
    score: str = "incoming_max"
    tau: float | None = None
    ratio: float | None = None
    method: str = "group_lasso"
    budget: float | None = None
    params_before: int = 0
    params_after: int = 0

    def to_dict(self) -> dict:
        """Plain summary (for a checkpoint's ``pruning`` entry)."""
        return {
            "rule": self.rule,
            "score": self.score,
            "tau": self.tau,
            "ratio": self.ratio,
            "method": self.method,
            "budget": self.budget,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "layers": list(self.layers),
            "kept": list(self.kept),
            "removed": list(self.removed),
            "removed_idxs": [list(r) for r in self.removed_idxs],
            "history": [[n, bool(o), [int(i) for i in idx]] for n, o, idx in self.history],
        }


@torch.no_grad()
def unit_scores(groups: Sequence[UnitGroups], score: str = "incoming_max") -> list[Tensor]:
    """Per layer, the score of each unit (see the module docstring), detached."""
    if score == "incoming_max":
        return [g.absmax(("in",)) for g in groups]
    if score == "incoming_l2":
        return [safe_sqrt(g.sq_norms(("in",))) for g in groups]
    if score == "group_l2":
        return [safe_sqrt(g.sq_norms(("in", "out"))) for g in groups]
    raise ValueError(f"unknown score {score!r}; one of {SCORES}")


def select_units(scores: Tensor, rule: str, tau: float = 1e-3, ratio: float = 0.5) -> list[int]:
    """Indices of the units to remove from one layer, never all of them."""
    n = scores.numel()
    if rule == "threshold":
        drop = torch.nonzero(scores <= tau).flatten()
        if drop.numel() == n:  # keep the strongest unit
            drop = drop[drop != int(torch.argmax(scores))]
    elif rule == "ratio":
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        k = min(math.floor(ratio * n), n - 1)
        drop = torch.argsort(scores, stable=True)[:k]
    else:
        raise ValueError(f"unknown rule {rule!r} (threshold or ratio)")
    return sorted(int(i) for i in drop)


def prune_model(
    model: nn.Module,
    example_input: Tensor,
    rule: str = "threshold",
    tau: float = 1e-3,
    ratio: float = 0.5,
    score: str | None = None,
    *,
    method: str = "group_lasso",
    budget: float = 0.5,
    target_params: float | None = None,
    norm: int = 2,
) -> PruneResult:
    """Remove units of every hidden layer in place; ``model.arch`` is updated to the new widths.

    ``method="taylor"`` reads the gradients already in ``.grad`` (accumulate the loss's first).
    """
    score = score or _DEFAULT_SCORE.get(rule, "incoming_max")
    if method != "group_lasso" and rule == "threshold":
        raise ValueError(f"method {method!r} ranks units: use rule 'ratio' or 'budget', not 'threshold'")
    params_before = sum(p.numel() for p in model.parameters())
    dg = dependency_graph(model, example_input)
    groups = unit_groups_from_graph(model, dg)
    if method == "group_lasso":
        scores = unit_scores(groups, score)
    else:
        scores = layer_importance(dg, groups, importance(method, norm))
        score = method if method != "magnitude" else f"magnitude_l{norm}"
    if rule == "budget":
        target = budget * params_before if target_params is None else target_params
        keep = keep_for_budget(model, groups, target)
        drops = [
            sorted(int(i) for i in torch.argsort(s, stable=True)[: g.n_units - k])
            for g, s, k in zip(groups, scores, keep)
        ]
    else:
        drops = [select_units(s, rule, tau, ratio) for s in scores]
    for g, drop in zip(groups, drops):
        if drop:  # indices of one layer's own units stay valid while other layers shrink
            group = dg.get_pruning_group(g.layer, g.prune_fn, drop)
            if not dg.check_pruning_group(group):
                raise RuntimeError(f"Torch-Pruning refused to prune {g.name} units {drop}")
            group.prune()
    model.arch = arch_of(model)
    return PruneResult(
        model=model,
        kept=[g.n_units - len(d) for g, d in zip(groups, drops)],
        removed=[len(d) for d in drops],
        history=[[n, bool(o), [int(i) for i in idx]] for n, o, idx in dg.pruning_history()],
        layers=[g.name for g in groups],
        removed_idxs=drops,
        rule=rule,
        score=score,
        tau=tau if rule == "threshold" else None,
        ratio=ratio if rule == "ratio" else None,
        method=method,
        budget=budget if rule == "budget" else None,
        params_before=params_before,
        params_after=sum(p.numel() for p in model.parameters()),
    )


@torch.no_grad()
def mask_model(model: nn.Module, removed_idxs: Sequence[Sequence[int]], example_input: Tensor) -> nn.Module:
    """Zero (in place) the whole group of each listed unit: the masked twin of a pruned network."""
    groups = unit_groups(model, example_input)
    if len(removed_idxs) != len(groups):
        raise ValueError(f"{len(removed_idxs)} index lists for {len(groups)} prunable layers")
    for g, drop in zip(groups, removed_idxs):
        if not drop:
            continue
        gone = torch.zeros(g.n_units, dtype=torch.bool, device=g.layer.weight.device)
        gone[torch.as_tensor(list(drop), dtype=torch.long, device=gone.device)] = True
        for s in g.slices:
            pos = s.idx[gone[s.unit]]
            s.param.index_fill_(s.dim, pos, 0.0)
    return model
