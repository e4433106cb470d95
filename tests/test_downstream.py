"""Downstream uncertainty metrics: OOD detection, uncertainty ranking, selective prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gped_search.metrics.quality import student_outputs
from gped_search.metrics.uncertainty import (
    accuracy_rejection,
    downstream_record,
    ood_metrics,
    ranking_metrics,
    rejection_auc,
    roc_curves,
    uncertainty_scores,
)
from gped_search.models import build, student_arch
from gped_search.posterior.expectations import entropy

# ---------------------------------------------------------------- uncertainty scores


def test_uncertainty_scores_hand_values():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.8, 0.2]])
    ee = torch.tensor([[0.0], [0.3], [0.1]])  # (N, 1), as the accumulator and the student heads give
    s = uncertainty_scores({"predictive": p, "expected_entropy": ee})
    assert set(s) == {"predictive_entropy", "max_prob", "expected_entropy", "mutual_information"}
    h = np.array([0.0, math.log(2), -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))])
    np.testing.assert_allclose(s["predictive_entropy"], h, atol=1e-9)
    np.testing.assert_allclose(s["max_prob"], [0.0, 0.5, 0.2], atol=1e-7)
    np.testing.assert_allclose(s["expected_entropy"], [0.0, 0.3, 0.1], atol=1e-7)
    assert all(v.shape == (3,) and isinstance(v, np.ndarray) for v in s.values())


def test_uncertainty_scores_without_expected_entropy():
    s = uncertainty_scores({"predictive": np.full((5, 4), 0.25)})
    assert set(s) == {"predictive_entropy", "max_prob"}
    np.testing.assert_allclose(s["predictive_entropy"], math.log(4))


def test_mutual_information_is_predictive_minus_expected_entropy_unclipped():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(50, 6, generator=g), -1)
    ee = torch.rand(50, generator=g) * 2.0  # often larger than H(p): a student can predict that
    s = uncertainty_scores({"predictive": p, "expected_entropy": ee})
    expected = (entropy(p.double()) - ee.double()).numpy()
    np.testing.assert_allclose(s["mutual_information"], expected, atol=1e-9)
    np.testing.assert_allclose(s["mutual_information"], s["predictive_entropy"] - s["expected_entropy"],
                               atol=1e-9)
    assert (s["mutual_information"] < 0).any()  # not clipped


def test_uncertainty_scores_rejects_bad_shapes():
    with pytest.raises(ValueError):
        uncertainty_scores({"predictive": torch.ones(4)})
    with pytest.raises(ValueError):
        uncertainty_scores({"predictive": torch.ones(4, 2) / 2, "expected_entropy": torch.ones(3)})


# ---------------------------------------------------------------- OOD detection


def test_ood_auroc_perfect_reversed_and_hand_example():
    perfect = ood_metrics({"s": np.array([0.1, 0.2, 0.3])}, {"s": np.array([0.7, 0.8])})
    assert perfect == {"auroc_s": 1.0, "aupr_s": 1.0}
    reversed_ = ood_metrics({"s": np.array([0.7, 0.8])}, {"s": np.array([0.1, 0.2, 0.3])})
    assert reversed_["auroc_s"] == 0.0
    # in = {0.1, 0.4}, out = {0.35, 0.8}: 3 of the 4 (out, in) pairs are ordered right -> 0.75.
    # Ranked: 0.8(+) 0.4(-) 0.35(+) 0.1(-); AP = 0.5 * 1 + 0.5 * 2/3 = 5/6.
    hand = ood_metrics({"s": torch.tensor([0.1, 0.4])}, {"s": torch.tensor([0.35, 0.8])})
    assert hand["auroc_s"] == pytest.approx(0.75)
    assert hand["aupr_s"] == pytest.approx(5 / 6)


def test_ood_metrics_only_shared_scores():
    rec = ood_metrics({"a": np.arange(3.0), "b": np.arange(3.0)}, {"a": np.arange(3.0) + 10})
    assert set(rec) == {"auroc_a", "aupr_a"}


def test_roc_curves_endpoints():
    fpr, tpr = roc_curves({"s": np.array([0.1, 0.4])}, {"s": np.array([0.35, 0.8])}, "s")
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)


# ---------------------------------------------------------------- ranking


def test_ranking_identical_and_reversed():
    t = np.arange(20.0)
    same = ranking_metrics(t, 3 * t + 1)  # monotone transform: same ranking
    assert same["spearman"] == pytest.approx(1.0)
    assert same["kendall"] == pytest.approx(1.0)
    assert same["topk_overlap"] == 1.0
    rev = ranking_metrics(t, -t)
    assert rev["spearman"] == pytest.approx(-1.0)
    assert rev["kendall"] == pytest.approx(-1.0)
    assert rev["topk_overlap"] == 0.0


def test_topk_overlap_hand_case():
    teacher = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], dtype=float)  # top 3: {0, 1, 2}
    student = np.array([9, 8, 0, 6, 5, 7.5, 3, 2, 1, 0.5])  # top 3: {0, 1, 5}
    assert ranking_metrics(teacher, student, k_frac=0.3)["topk_overlap"] == pytest.approx(2 / 3)
    # k = ceil(0.1 * 10) = 1: both put example 0 first
    assert ranking_metrics(teacher, student, k_frac=0.1)["topk_overlap"] == 1.0


def test_topk_k_is_ceil_without_float_slop():
    # 0.1 * 30 = 3.0000000000000004 in floating point; k must still be 3, not 4.
    t = np.arange(30.0)[::-1].copy()  # top 3: {0, 1, 2}
    s = t.copy()
    s[3] = 100.0  # student's top 3: {3, 0, 1}; a 4th slot would admit {2} and give 1.0
    assert ranking_metrics(t, s, k_frac=0.1)["topk_overlap"] == pytest.approx(2 / 3)


def test_ranking_rejects_mismatch():
    with pytest.raises(ValueError):
        ranking_metrics(np.arange(3.0), np.arange(4.0))


# ---------------------------------------------------------------- selective prediction


def _tiny_selective():
    # Three confident correct predictions and one uncertain wrong one.
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.95, 0.05], [0.45, 0.55]])
    y = torch.tensor([0, 1, 0, 0])
    return probs, y, entropy(probs)


def test_accuracy_rejection_hand_case():
    probs, y, score = _tiny_selective()
    f, acc = accuracy_rejection(probs, y, score, fractions=[0.0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(f, [0.0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(acc, [0.75, 1.0, 1.0, 1.0])
    # With the score reversed the wrong example is kept to the end.
    _, acc_bad = accuracy_rejection(probs, y, -score, fractions=[0.0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(acc_bad, [0.75, 2 / 3, 0.5, 0.0])


def test_accuracy_rejection_default_grid_keeps_one():
    probs, y, score = _tiny_selective()
    f, acc = accuracy_rejection(probs, y, score)
    assert f.shape == acc.shape == (100,)
    assert f[0] == 0 and f[-1] == pytest.approx(0.99)
    assert np.all((acc >= 0) & (acc <= 1))


def test_rejection_auc_perfect_model_is_one():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 5, (37,), generator=g)
    probs = torch.nn.functional.one_hot(y, 5).float() * 0.9 + 0.02
    score = torch.rand(37, generator=g)
    assert rejection_auc(probs, y, score) == pytest.approx(1.0)


def test_rejection_auc_rewards_good_ranking():
    probs, y, score = _tiny_selective()
    assert rejection_auc(probs, y, score) > rejection_auc(probs, y, -score)


# ---------------------------------------------------------------- downstream record


def _synthetic(n: int, k: int, temp: float, seed: int):
    """Posterior-mean-like dict: softmax(logits / temp) with an expected entropy below H(p)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * 3.0
    y = logits.argmax(1)
    p = torch.softmax(logits / temp, -1)
    ee = entropy(p) * (0.5 + 0.4 * torch.rand(n, generator=g))
    return {"predictive": p, "expected_entropy": ee[:, None]}, y


def _noisy(means: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    p = means["predictive"] * (1 + 0.1 * torch.rand(means["predictive"].shape, generator=g))
    return {"predictive": p / p.sum(1, keepdim=True),
            "expected_entropy": means["expected_entropy"] * (1 + 0.1 * torch.rand(p.shape[0], 1, generator=g))}


OOD_KEYS = {"ood_auroc", "ood_aupr", "ood_auroc_mi", "teacher_ood_auroc", "ood_auroc_predictive_entropy",
            "ood_auroc_max_prob", "ood_auroc_expected_entropy", "ood_auroc_mutual_information"}
BASE_KEYS = {"rank_spearman", "rank_kendall", "rank_topk", "rank_spearman_mi", "rejection_auc",
             "teacher_rejection_auc"}


def test_downstream_record_synthetic_shift():
    teacher_in, y = _synthetic(200, 10, temp=0.3, seed=0)  # peaked
    teacher_out, _ = _synthetic(150, 10, temp=20.0, seed=1)  # nearly flat
    student_in, student_out = _noisy(teacher_in, 2), _noisy(teacher_out, 3)
    rec = downstream_record(teacher_in, student_in, y, teacher_out, student_out)
    assert set(rec) == BASE_KEYS | OOD_KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in rec.values())
    assert rec["ood_auroc"] > 0.9
    assert rec["teacher_ood_auroc"] > 0.9
    assert rec["ood_auroc"] == rec["ood_auroc_predictive_entropy"]
    assert rec["ood_auroc_mi"] == rec["ood_auroc_mutual_information"]
    assert 0 <= rec["ood_aupr"] <= 1
    assert rec["rank_spearman"] > 0.8  # small multiplicative noise keeps the ranking
    assert -1 <= rec["rank_kendall"] <= 1 and 0 <= rec["rank_topk"] <= 1
    assert rec["teacher_rejection_auc"] == pytest.approx(1.0)  # y is the teacher's argmax
    assert 0 < rec["rejection_auc"] <= 1


def test_downstream_record_without_ood_or_expected_entropy():
    teacher_in, y = _synthetic(60, 4, temp=1.0, seed=4)
    student_in = _noisy(teacher_in, 5)
    rec = downstream_record(teacher_in, student_in, y, None, None)
    assert set(rec) == BASE_KEYS
    # only one of the two OOD dicts: still no OOD keys
    assert set(downstream_record(teacher_in, student_in, y, teacher_in, None)) == BASE_KEYS
    pred_only = downstream_record({"predictive": teacher_in["predictive"]},
                                  {"predictive": student_in["predictive"]}, y,
                                  {"predictive": teacher_in["predictive"]},
                                  {"predictive": student_in["predictive"]})
    assert set(pred_only) == (BASE_KEYS - {"rank_spearman_mi"}) | {
        "ood_auroc", "ood_aupr", "teacher_ood_auroc", "ood_auroc_predictive_entropy", "ood_auroc_max_prob"}


def test_downstream_record_with_real_student_outputs():
    torch.manual_seed(0)
    model = build(student_arch("mlp", (1, 8, 8), 5, (("predictive", 0), ("expected_entropy", 1)),
                               widths=(16,)))
    g = torch.Generator().manual_seed(6)
    x_in, x_out = torch.randn(40, 1, 8, 8, generator=g), 4 * torch.randn(30, 1, 8, 8, generator=g)
    teacher_in, y = _synthetic(40, 5, temp=0.5, seed=7)
    teacher_out, _ = _synthetic(30, 5, temp=10.0, seed=8)
    rec = downstream_record(teacher_in, student_outputs(model, x_in), y, teacher_out,
                            student_outputs(model, x_out))
    assert set(rec) == BASE_KEYS | OOD_KEYS
    assert all(math.isfinite(v) for v in rec.values())


def test_rank_correlations_of_a_constant_score_are_nan_without_a_warning():
    import warnings

    from gped_search.metrics.uncertainty import ranking_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's ConstantInputWarning would fail this
        got = ranking_metrics([0.1, 0.5, 0.3, 0.2], [0.7, 0.7, 0.7, 0.7])
    assert math.isnan(got["spearman"]) and math.isnan(got["kendall"]) and 0 <= got["topk_overlap"] <= 1
