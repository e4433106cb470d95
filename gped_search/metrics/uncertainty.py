"""Downstream uses of uncertainty: OOD detection, uncertainty ranking and selective prediction.

Everything here is a pure function of posterior means (the teacher's) or head outputs (a student's,
from :func:`gped_search.metrics.quality.student_outputs`): a dict with ``predictive`` (N, K)
probabilities and optionally ``expected_entropy`` (N,) or (N, 1) in nats. Tensors or arrays go in;
Python floats or NumPy arrays come out.

Uncertainty scores (higher = more uncertain, and for OOD detection = more out-of-distribution):

* ``predictive_entropy``: H(E[p]), total uncertainty;
* ``max_prob``: 1 - max_k E[p]_k (one minus the confidence);
* ``expected_entropy``: E[H(p)], aleatoric uncertainty (only with that key);
* ``mutual_information``: H(E[p]) - E[H(p)], epistemic uncertainty (only with ``expected_entropy``).

The mutual information is *not* clipped at 0: for the teacher it is >= 0 up to Monte-Carlo and float
error, but a student predicts the two terms with separate heads, so its difference can be negative.
Clipping would tie every such point at 0 and change rankings and AUROCs; the raw value keeps them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from gped_search.posterior.expectations import entropy, mutual_information

__all__ = [
    "SCORES",
    "uncertainty_scores",
    "ood_metrics",
    "roc_curves",
    "ranking_metrics",
    "accuracy_rejection",
    "rejection_auc",
    "downstream_record",
]

SCORES = ("predictive_entropy", "max_prob", "expected_entropy", "mutual_information")
DEFAULT_FRACTIONS = np.linspace(0, 0.99, 100)
_EPS = 1e-9


def _tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double()
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _vector(x, name: str) -> np.ndarray:
    v = _numpy(x).astype(np.float64)
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 1), got {v.shape}")
    return v


def uncertainty_scores(means: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, np.ndarray]:
    """Per-example uncertainty scores (N,) from ``predictive`` and, if present, ``expected_entropy``.

    Keys: ``predictive_entropy``, ``max_prob`` (1 - max probability), and with ``expected_entropy``:
    ``expected_entropy`` and ``mutual_information`` (unclipped, see the module docstring).
    """
    p = _tensor(means["predictive"])
    if p.ndim != 2:
        raise ValueError(f"predictive must have shape (N, K), got {tuple(p.shape)}")
    out = {
        "predictive_entropy": entropy(p).numpy(),
        "max_prob": (1.0 - p.max(1).values).numpy(),
    }
    if "expected_entropy" in means:
        ee = _tensor(means["expected_entropy"])
        if ee.numel() != p.shape[0]:
            raise ValueError(f"expected_entropy has {ee.numel()} values for {p.shape[0]} examples")
        out["expected_entropy"] = ee.reshape(-1).numpy()
        out["mutual_information"] = mutual_information(p, ee).numpy()
    return out


def _ood_data(in_score, out_score) -> tuple[np.ndarray, np.ndarray]:
    s_in, s_out = _vector(in_score, "in-distribution score"), _vector(out_score, "OOD score")
    labels = np.concatenate([np.zeros(s_in.size), np.ones(s_out.size)])
    return labels, np.concatenate([s_in, s_out])


def ood_metrics(in_scores: Mapping[str, np.ndarray], out_scores: Mapping[str, np.ndarray]) -> dict[str, float]:
    """``auroc_<score>`` and ``aupr_<score>`` for every score in both dicts, OOD = positive class.

    A higher score must mean "more OOD" (true of all :func:`uncertainty_scores`). AUPR is the average
    precision with OOD positive, so its chance level is the OOD share of the pooled set.
    """
    rec: dict[str, float] = {}
    for name in in_scores:
        if name not in out_scores:
            continue
        labels, scores = _ood_data(in_scores[name], out_scores[name])
        rec[f"auroc_{name}"] = float(roc_auc_score(labels, scores))
        # sklearn's sum of recall steps x precision can overshoot 1 by an ulp; AP lies in [0, 1].
        rec[f"aupr_{name}"] = float(np.clip(average_precision_score(labels, scores), 0.0, 1.0))
    return rec


def roc_curves(
    in_scores: Mapping[str, np.ndarray], out_scores: Mapping[str, np.ndarray], score: str
) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the OOD detector that thresholds ``score`` (OOD positive), for plotting."""
    labels, scores = _ood_data(in_scores[score], out_scores[score])
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr


def _top_k(score: np.ndarray, k: int) -> np.ndarray:
    # Stable sort of -score: among ties the lower index wins, so the choice is deterministic.
    return np.argsort(-score, kind="stable")[:k]


def ranking_metrics(teacher_score, student_score, k_frac: float = 0.1) -> dict[str, float]:
    """How well a student ranks examples by uncertainty compared with the teacher.

    ``spearman`` and ``kendall`` (tau-b) rank correlations (NaN when a score is constant), and
    ``topk_overlap``: the fraction of the teacher's k most uncertain examples that are also among the
    student's k most uncertain, k = ceil(k_frac * N) (at least 1, at most N).
    """
    t, s = _vector(teacher_score, "teacher score"), _vector(student_score, "student score")
    if t.shape != s.shape:
        raise ValueError(f"teacher and student scores differ in length: {t.size} vs {s.size}")
    if t.size == 0:
        raise ValueError("empty scores")
    if not 0 < k_frac <= 1:
        raise ValueError("k_frac must be in (0, 1]")
    k = min(max(math.ceil(k_frac * t.size - _EPS), 1), t.size)
    overlap = np.intersect1d(_top_k(t, k), _top_k(s, k)).size / k
    constant = np.ptp(t) == 0 or np.ptp(s) == 0  # undefined: NaN, without scipy's ConstantInputWarning
    return {
        "spearman": float("nan") if constant else float(spearmanr(t, s).statistic),
        "kendall": float("nan") if constant else float(kendalltau(t, s).statistic),
        "topk_overlap": float(overlap),
    }


def accuracy_rejection(probs, y, score, fractions=DEFAULT_FRACTIONS) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of argmax ``probs`` after rejecting the most uncertain fraction of examples.

    For each fraction f, the floor(f * N) examples with the highest ``score`` are rejected (ties broken
    by index, later examples rejected first) and the accuracy of the rest is returned; at least one
    example is always kept. Returns (fractions, accuracies) as arrays.
    """
    p = _numpy(probs)
    labels = _numpy(y).reshape(-1)
    u = _vector(score, "score")
    if p.ndim != 2 or p.shape[0] != labels.size or u.size != labels.size:
        raise ValueError(f"shapes disagree: probs {p.shape}, y {labels.shape}, score {u.shape}")
    if labels.size == 0:
        raise ValueError("empty inputs")
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1 or np.any((fractions < 0) | (fractions >= 1)):
        raise ValueError("fractions must be a 1-D array in [0, 1)")
    n = labels.size
    correct = (p.argmax(1) == labels).astype(np.float64)
    order = np.argsort(u, kind="stable")  # most certain first
    kept_correct = np.cumsum(correct[order])  # kept_correct[m - 1]: correct among the m most certain
    n_keep = np.maximum(n - np.floor(fractions * n + _EPS).astype(np.int64), 1)
    return fractions, kept_correct[n_keep - 1] / n_keep


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    trap = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
    return float(trap(y, x))


def rejection_auc(probs, y, score, fractions=DEFAULT_FRACTIONS) -> float:
    """Area under the accuracy-rejection curve divided by the span of ``fractions``.

    With the default fractions (0 to 0.99) a model that is always right scores 1.0; a better
    uncertainty ranking (errors rejected first) scores higher for the same accuracy.
    """
    f, acc = accuracy_rejection(probs, y, score, fractions)
    span = float(f[-1] - f[0]) if f.size else 0.0
    if span <= 0:
        return float(acc.mean())
    return _trapezoid(acc, f) / span


def downstream_record(
    teacher_test: Mapping[str, torch.Tensor],
    student_test: Mapping[str, torch.Tensor],
    y,
    teacher_ood: Mapping[str, torch.Tensor] | None = None,
    student_ood: Mapping[str, torch.Tensor] | None = None,
    student_only_ood: bool = False,
) -> dict[str, float]:
    """Flat scalar downstream metrics of one student (the search's objectives).

    Always: ``rank_spearman``, ``rank_kendall``, ``rank_topk`` (student vs teacher predictive-entropy
    ranking on the test set, k_frac = 0.1), ``rank_spearman_mi`` (mutual-information ranking, when
    both have ``expected_entropy``), ``rejection_auc`` (student probabilities, predictive-entropy
    score) and ``teacher_rejection_auc``.

    With both ``teacher_ood`` and ``student_ood`` (outputs on an OOD set): ``ood_auroc`` and
    ``ood_aupr`` (student, predictive entropy), ``ood_auroc_mi`` (student, mutual information, when
    available), ``ood_auroc_<score>`` for every student score, and ``teacher_ood_auroc`` (teacher,
    predictive entropy). ``student_only_ood``: the student's OOD scores without the teacher's (OOD
    images the teacher has no means on, e.g. the validation side's); no ``teacher_ood_auroc`` then.
    """
    t_in, s_in = uncertainty_scores(teacher_test), uncertainty_scores(student_test)
    rank = ranking_metrics(t_in["predictive_entropy"], s_in["predictive_entropy"])
    rec = {
        "rank_spearman": rank["spearman"],
        "rank_kendall": rank["kendall"],
        "rank_topk": rank["topk_overlap"],
    }
    if "mutual_information" in t_in and "mutual_information" in s_in:
        rec["rank_spearman_mi"] = ranking_metrics(t_in["mutual_information"], s_in["mutual_information"])["spearman"]
    rec["rejection_auc"] = rejection_auc(student_test["predictive"], y, s_in["predictive_entropy"])
    rec["teacher_rejection_auc"] = rejection_auc(teacher_test["predictive"], y, t_in["predictive_entropy"])
    if student_ood is not None and (teacher_ood is not None or student_only_ood):
        s_ood = ood_metrics(s_in, uncertainty_scores(student_ood))
        rec["ood_auroc"] = s_ood["auroc_predictive_entropy"]
        rec["ood_aupr"] = s_ood["aupr_predictive_entropy"]
        if "auroc_mutual_information" in s_ood:
            rec["ood_auroc_mi"] = s_ood["auroc_mutual_information"]
        for name in s_in:
            if f"auroc_{name}" in s_ood:
                rec[f"ood_auroc_{name}"] = s_ood[f"auroc_{name}"]
        if teacher_ood is not None:
            rec["teacher_ood_auroc"] = ood_metrics(t_in, uncertainty_scores(teacher_ood))["auroc_predictive_entropy"]
    return rec
