"""Structured groups for the group-LASSO penalty, read from Torch-Pruning's dependency graph.

One :class:`UnitGroups` per prunable hidden layer (every ``Conv2d`` and ``Linear`` in
``model.body``; the heads are never roots, so their outputs are never pruned). For each output
unit/channel of the layer the group holds every parameter slice that is removed together with it:

* the unit's incoming weights (row ``u`` of a ``Linear`` / filter ``u`` of a ``Conv2d``) and bias;
* the consumer's input columns: column ``u`` of the next ``Linear`` or of every head, input
  channel ``u`` of the next ``Conv2d``, or, across ``conv -> pool -> flatten -> linear``, the
  columns ``u*H*W .. (u+1)*H*W - 1`` of the first fully connected layer.

The slices come from ``DependencyGraph.get_pruning_group`` (its ``root_idxs`` map every pruned
position back to the unit it belongs to), so they are exactly what ``group.prune()`` removes.
Each slice is stored as index tensors (position along the parameter axis, and the unit of that
position); the penalty is a few tensor ops per slice, with no Python loop over units.

The heads are deliberately *not* passed to ``build_dependency(ignored_layers=...)``: that argument
drops them from tracing, so pruning the last hidden layer would no longer cut the heads' input
columns and the pruned network would fail with a shape mismatch. Keeping them traced but never
using them as pruning roots is what keeps their outputs intact.

Parameters are looked up on the module at every call (not captured), but the index tensors
describe the current widths: rebuild the groups after pruning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import Tensor, nn

__all__ = [
    "Slice",
    "UnitGroups",
    "dependency_graph",
    "prunable_layers",
    "unit_groups",
    "unit_groups_from_graph",
    "group_norms",
    "group_lasso_penalty",
    "safe_sqrt",
]


@dataclass(frozen=True)
class Slice:
    """Positions ``idx`` along axis ``dim`` of ``module.<param_name>``; ``unit[i]`` owns ``idx[i]``.

    ``role`` is ``"in"`` for the layer's own weights/bias (the unit's incoming weights) and
    ``"out"`` for a consumer's input columns (the weights that read the unit).
    """

    module_name: str
    module: nn.Module
    param_name: str
    dim: int
    idx: Tensor
    unit: Tensor
    role: str

    @property
    def param(self) -> Tensor:
        return getattr(self.module, self.param_name)

    def per_position(self, fn: str = "sq") -> Tensor:
        """Reduce the parameter over all axes but ``dim``: sum of squares (``"sq"``) or max |w|."""
        p = self.param
        rows = p.movedim(self.dim, 0).reshape(p.shape[self.dim], -1)
        if fn == "sq":
            red = rows.pow(2).sum(1)
        elif fn == "absmax":
            red = rows.abs().amax(1)
        else:
            raise ValueError(f"unknown reduction {fn!r}")
        return red.index_select(0, self.idx.to(p.device))


@dataclass(frozen=True)
class UnitGroups:
    """All groups of one layer: ``n_units`` groups made of the coupled ``slices``."""

    name: str
    layer: nn.Module
    n_units: int
    slices: tuple[Slice, ...]

    @property
    def prune_fn(self):
        return tp.prune_conv_out_channels if isinstance(self.layer, nn.Conv2d) else tp.prune_linear_out_channels

    def sq_norms(self, roles: Sequence[str] = ("in", "out")) -> Tensor:
        """Per unit, the sum of squares of its slices with a role in ``roles`` (shape ``(n_units,)``)."""
        ref = self.layer.weight
        total = torch.zeros(self.n_units, dtype=ref.dtype, device=ref.device)
        for s in self.slices:
            if s.role in roles:
                total = total.index_add(0, s.unit.to(ref.device), s.per_position("sq"))
        return total

    def absmax(self, roles: Sequence[str] = ("in",)) -> Tensor:
        """Per unit, the largest |w| over its slices with a role in ``roles``."""
        ref = self.layer.weight
        total = torch.zeros(self.n_units, dtype=ref.dtype, device=ref.device)
        for s in self.slices:
            if s.role in roles:
                total = total.scatter_reduce(0, s.unit.to(ref.device), s.per_position("absmax"), "amax")
        return total


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every ``Conv2d``/``Linear`` in ``model.body``, in forward order."""
    return [(f"body.{i}", m) for i, m in enumerate(model.body) if isinstance(m, (nn.Conv2d, nn.Linear))]


def dependency_graph(model: nn.Module, example_input: Tensor) -> tp.DependencyGraph:
    """Trace ``model`` (heads included, see module docstring); restores the train/eval mode."""
    was_training = model.training
    device = next(model.parameters()).device
    try:
        with torch.enable_grad():  # tracing relies on autograd
            dg = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_input.detach().to(device), verbose=False
            )
    finally:
        model.train(was_training)  # build_dependency leaves the model in eval mode
    return dg


def _slices_of(item, dg: tp.DependencyGraph, names: dict[nn.Module, str], root: nn.Module) -> list[Slice]:
    module = item.dep.target.module
    if not isinstance(module, nn.Module) or not any(True for _ in module.parameters(recurse=False)):
        return []  # ReLU / pool / flatten / output placeholders carry no weights
    if not isinstance(module, (nn.Linear, nn.Conv2d)) or (isinstance(module, nn.Conv2d) and module.groups != 1):
        raise NotImplementedError(f"group LASSO does not handle {type(module).__name__} in a group")
    device = module.weight.device  # index tensors live with the weights (moved again if needed)
    idx = torch.as_tensor(list(item.idxs), dtype=torch.long, device=device)
    unit = torch.as_tensor(list(item.root_idxs), dtype=torch.long, device=device)
    name = names[module]
    if dg.is_out_channel_pruning_fn(item.dep.handler):
        role = "in" if module is root else "out"
        out = [Slice(name, module, "weight", 0, idx, unit, role)]
        if module.bias is not None:
            out.append(Slice(name, module, "bias", 0, idx, unit, role))
        return out
    return [Slice(name, module, "weight", 1, idx, unit, "out")]


def unit_groups_from_graph(model: nn.Module, dg: tp.DependencyGraph) -> list[UnitGroups]:
    """The groups of every prunable hidden layer, from an already built dependency graph."""
    names = {m: n for n, m in model.named_modules()}
    result = []
    for name, layer in prunable_layers(model):
        n = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        fn = tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels
        group = dg.get_pruning_group(layer, fn, list(range(n)))
        slices = [s for item in group.items for s in _slices_of(item, dg, names, layer)]
        result.append(UnitGroups(name, layer, n, tuple(slices)))
    return result


def unit_groups(model: nn.Module, example_input: Tensor) -> list[UnitGroups]:
    """One :class:`UnitGroups` per prunable hidden layer of ``model`` (heads are never pruned)."""
    return unit_groups_from_graph(model, dependency_graph(model, example_input))


def safe_sqrt(sq: Tensor) -> Tensor:
    """``sqrt(sq)`` with gradient 0 (not NaN) where ``sq == 0``.

    No eps is added, so the value is exact; at an all-zero group the gradient is the zero vector,
    which is a valid subgradient of the L2 norm at 0 (the "double where" trick).
    """
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def group_norms(groups: Sequence[UnitGroups]) -> list[Tensor]:
    """Per layer, the L2 norm of each unit's whole group (incoming and consuming weights)."""
    return [safe_sqrt(g.sq_norms()) for g in groups]


def group_lasso_penalty(groups: Sequence[UnitGroups]) -> Tensor:
    """``sum_g ||w_g||_2`` over all groups of all layers, without lambda (multiply by lambda_g)."""
    norms = group_norms(groups)
    if not norms:
        return torch.zeros(())
    return torch.stack([n.sum() for n in norms]).sum()
