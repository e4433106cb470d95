"""Report layer: Pareto tables, hypervolume and figures (pure, file-independent)."""

from .plots import (
    UNITS,
    AxisSpec,
    axis_spec,
    plot_accuracy_rejection,
    plot_hypervolume,
    plot_pareto_pair,
    plot_roc,
)
from .tables import (
    direction_signs,
    eligible_mask,
    hypervolume,
    hypervolume_history,
    knee_point,
    pareto_front,
    pareto_mask,
    reference_point,
)

__all__ = [
    "UNITS",
    "AxisSpec",
    "axis_spec",
    "direction_signs",
    "eligible_mask",
    "hypervolume",
    "hypervolume_history",
    "knee_point",
    "pareto_front",
    "pareto_mask",
    "plot_accuracy_rejection",
    "plot_hypervolume",
    "plot_pareto_pair",
    "plot_roc",
    "reference_point",
]
