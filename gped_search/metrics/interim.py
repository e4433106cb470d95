"""Scores of a student before its trial ends: a supernet's slice with inherited weights, or a student at
a rung of successive halving. Selection-split quality and exact cost; a measured latency is ranked by
its exact MACs (timing every candidate would cost more than the strategy saves), and the trials that go
on to the end measure it for real."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gped_search.errors import ConfigError

from .cost import cost_figures
from .quality import evaluate, student_outputs

__all__ = ["COST", "SCORED", "PROXY", "check_objectives", "interim_scores"]

COST = ("params", "buffers", "bytes_fp32", "bytes_fp16", "bytes", "macs", "macs_conv_linear")
PROXY = {"latency_ms": "macs", "latency_p10_ms": "macs", "latency_p90_ms": "macs"}
"""Measured objectives ranked by an exact figure while scoring."""
QUALITY = ("kl", "kl_st", "prob_mae", "student_nll", "student_acc", "student_ece", "mi_mae")
SCORED = (*QUALITY, *COST, *PROXY)
"""Objectives an interim score ranks (plus ``<target>_mae``)."""


def check_objectives(names: Sequence[str], strategy: str) -> None:
    """One line for an objective that cannot be scored before a trial ends."""
    for n in names:
        if n not in SCORED and not n.endswith("_mae"):
            raise ConfigError(
                f"search.objectives.{n}: search.strategy {strategy} ranks students before their trials end "
                f"by {', '.join(SCORED)} or <target>_mae; {n!r} needs each student trained to the end "
                f"(use search.strategy trials)"
            )


@torch.no_grad()
def interim_scores(p, teacher, model: torch.nn.Module) -> dict:
    """``model``'s quality on the first ``search.interim_images`` of the selection split (validation; the
    test set without one) against the teacher's means, its exact cost, and the latency proxies."""
    b = p.bundle
    split, means = (b.val, teacher.val) if b.val is not None and teacher.val is not None else (b.test, teacher.test)
    n = p.cfg.search.interim_images or len(split.y)
    x, y, means = split.x[:n], split.y[:n], {k: v[:n] for k, v in means.items()}
    was = model.training
    model.eval()
    try:
        rec = evaluate(model, x, y, means, outputs=student_outputs(model, x))
        rec.update(cost_figures(model, x[:1]))
    finally:
        model.train(was)
    rec["bytes"] = rec["bytes_fp32"]
    for k, v in PROXY.items():
        rec[k] = rec[v]
    return rec
