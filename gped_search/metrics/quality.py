"""Quality of a teacher and a student against the teacher's posterior expectations.

One function, :func:`evaluate`, is used everywhere (CLI, search trials, benchmarks), so every
record names its metrics the same way. All values are nats or fractions.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from gped_search.posterior.expectations import entropy

__all__ = ["nll", "accuracy", "ece", "predictive_metrics", "student_outputs", "evaluate"]


def nll(probs: torch.Tensor, y: torch.Tensor) -> float:
    return float(-probs.gather(1, y[:, None]).clamp_min(1e-12).log().mean())


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    return float((probs.argmax(1) == y).float().mean())


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins."""
    conf, pred = probs.max(1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1, device=probs.device, dtype=conf.dtype)
    which = torch.bucketize(conf, edges[1:-1], right=True)
    total = torch.zeros(bins, device=probs.device, dtype=conf.dtype)
    gap = torch.zeros(bins, device=probs.device, dtype=conf.dtype)
    total.index_add_(0, which, torch.ones_like(conf))
    gap.index_add_(0, which, conf - correct)
    return float(gap.abs().sum() / conf.shape[0])


def predictive_metrics(probs: torch.Tensor, y: torch.Tensor, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}_nll": nll(probs, y),
        f"{prefix}_acc": accuracy(probs, y),
        f"{prefix}_ece": ece(probs, y),
    }


@torch.no_grad()
def student_outputs(model: torch.nn.Module, x: torch.Tensor, chunk: int = 4096) -> dict[str, torch.Tensor]:
    """Eval-mode outputs of every head over ``x``; ``predictive`` as probabilities."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    for i in range(0, x.shape[0], chunk):
        for k, v in model.named_outputs(x[i : i + chunk]).items():
            parts.setdefault(k, []).append(v)
    model.train(was_training)
    out = {k: torch.cat(v) for k, v in parts.items()}
    out["predictive"] = F.softmax(out["predictive"], -1)
    return out


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    teacher: dict[str, torch.Tensor],
    outputs: dict[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Teacher and student quality on (x, y) given the teacher's posterior means ``teacher``.

    Keys: teacher_/student_ nll, acc, ece; kl = KL(teacher || student), kl_st = KL(student || teacher),
    prob_mae = mean |p_T - p_S| over examples and classes; for each other head h: h_mae and the signed
    mean error h_bias (student - teacher; a biased loss shows here, not in the MAE); and with an
    expected-entropy head, mi_mae and mi_bias for the mutual information (predictive entropy -
    expected entropy).
    """
    s = student_outputs(model, x) if outputs is None else outputs  # ``outputs``: already computed on x
    p_t, p_s = teacher["predictive"], s["predictive"]
    log_t, log_s = p_t.clamp_min(1e-12).log(), p_s.clamp_min(1e-12).log()
    rec = predictive_metrics(p_t, y, "teacher") | predictive_metrics(p_s, y, "student")
    rec["kl"] = float((p_t * (log_t - log_s)).sum(1).mean())
    rec["kl_st"] = float((p_s * (log_s - log_t)).sum(1).mean())
    rec["prob_mae"] = float((p_t - p_s).abs().mean())
    for name, value in s.items():
        if name != "predictive" and name in teacher:
            rec[f"{name}_mae"] = float((value - teacher[name]).abs().mean())
            rec[f"{name}_bias"] = float((value - teacher[name]).mean())
    if "expected_entropy" in s and "expected_entropy" in teacher:
        mi_t = entropy(p_t) - teacher["expected_entropy"][:, 0]
        mi_s = entropy(p_s) - s["expected_entropy"][:, 0]
        rec["mi_mae"] = float((mi_t - mi_s).abs().mean())
        rec["mi_bias"] = float((mi_s - mi_t).mean())
    return rec
