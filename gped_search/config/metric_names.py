"""The metric names a trial records that objectives and constraints may name (one home for them)."""

from __future__ import annotations

from gped_search.errors import ConfigError

__all__ = ["METRICS", "ROBUST_METRICS", "check_metric"]

ROBUST_METRICS = ("robust_acc", "robust_error")
"""Adversarial-robustness metrics, measured only when an objective or constraint names one (they cost PGD)."""

METRICS = (
    "kl",
    "kl_st",
    "prob_mae",
    "mi_mae",
    "student_nll",
    "student_acc",
    "student_ece",
    "teacher_nll",
    "params",
    "buffers",
    "bytes_fp32",
    "bytes_fp16",
    "bytes",
    "fp32_kl",
    "macs",
    "macs_conv_linear",
    "latency_ms",
    *ROBUST_METRICS,
    "latency_p10_ms",
    "latency_p90_ms",
    "train_seconds",
    "units_removed",
    "ood_auroc",
    "ood_aupr",
    "rank_spearman",
    "rank_kendall",
    "rank_topk",
    "rejection_auc",
)
"""Metric names an objective or constraint may use (plus ``<target>_mae`` for every target)."""


def check_metric(name: str, targets: tuple[str, ...], where: str) -> None:
    """Objectives and constraints must name a metric the trial records."""
    allowed = set(METRICS) | {f"{t}_mae" for t in targets if t != "predictive"}
    if name.startswith("test_") and name[5:] in allowed:
        raise ConfigError(
            f"{where}: {name!r} is a test-set metric, recorded for reporting and never used for "
            f"selection; use {name[5:]!r} (measured on the validation split)"
        )
    if name not in allowed:
        raise ConfigError(f"{where}: unknown metric {name!r}; valid: {', '.join(sorted(allowed))}")
