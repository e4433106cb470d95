"""Report layer: Pareto tables, hypervolume, figures and comparisons (pure, file-independent; the
writer writes files)."""

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

_PLOTS = (
    "UNITS",
    "AxisSpec",
    "axis_spec",
    "plot_accuracy_rejection",
    "plot_hypervolume",
    "plot_pareto_pair",
    "plot_roc",
)


def __getattr__(name: str):
    """Figures (matplotlib) load on first use: reading tables stays light."""
    if name in _PLOTS:
        from . import figures, plots

        return getattr(plots if hasattr(plots, name) else figures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
