"""Group LASSO groups and structured pruning (Torch-Pruning dependency graph)."""

from gped_search.prune.groups import (
    Slice,
    UnitGroups,
    dependency_graph,
    group_lasso_penalty,
    group_norms,
    prunable_layers,
    safe_sqrt,
    unit_groups,
    unit_groups_from_graph,
)
from gped_search.prune.methods import (
    GRAD_METHODS,
    METHODS,
    REG_METHODS,
    keep_for_budget,
    params_after,
    regulariser,
)
from gped_search.prune.structured import (
    SCORES,
    PruneResult,
    mask_model,
    prune_model,
    select_units,
    unit_scores,
)

__all__ = [
    "GRAD_METHODS",
    "METHODS",
    "REG_METHODS",
    "keep_for_budget",
    "params_after",
    "regulariser",
    "SCORES",
    "PruneResult",
    "Slice",
    "UnitGroups",
    "dependency_graph",
    "group_lasso_penalty",
    "group_norms",
    "mask_model",
    "prunable_layers",
    "prune_model",
    "safe_sqrt",
    "select_units",
    "unit_groups",
    "unit_groups_from_graph",
    "unit_scores",
]
