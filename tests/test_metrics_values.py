"""Every metric of metrics/quality.py (the search's objectives) against values computed by hand,
and the teacher's bank means (downstream.teacher_means_on) against a plain loop over the samples."""

from __future__ import annotations

import math

import pytest
import torch

from gped_search.metrics.quality import accuracy, ece, evaluate, nll, predictive_metrics

# two examples, two classes; labels 0 and 1
P = torch.tensor([[0.9, 0.1], [0.4, 0.6]], dtype=torch.float64)
Y = torch.tensor([0, 1])


def test_nll_accuracy_by_hand():
    assert nll(P, Y) == pytest.approx(-(math.log(0.9) + math.log(0.6)) / 2)
    assert accuracy(P, Y) == 1.0
    assert accuracy(P, torch.tensor([1, 1])) == 0.5
    assert nll(torch.tensor([[1.0, 0.0]]), torch.tensor([1])) == pytest.approx(-math.log(1e-12))  # clamped


def test_ece_by_hand():
    # 15 equal bins: confidence 0.9 (correct) in bin 13, 0.6 (correct) in bin 9; |0.9-1| + |0.6-1| over 2
    assert ece(P, Y) == pytest.approx((0.1 + 0.4) / 2)
    # one bin holding a right and a wrong answer at confidence 0.7: |(0.7-1) + (0.7-0)| / 2 = 0.2
    q = torch.tensor([[0.7, 0.3], [0.7, 0.3]], dtype=torch.float64)
    assert ece(q, torch.tensor([0, 1])) == pytest.approx(0.2)
    assert predictive_metrics(P, Y, "s") == {"s_nll": nll(P, Y), "s_acc": 1.0, "s_ece": ece(P, Y)}


class _Fixed(torch.nn.Module):
    """A 'student' whose outputs are given: logits of ``probs`` and an expected-entropy head."""

    def __init__(self, probs, ent):
        super().__init__()
        self.logits, self.ent = probs.log(), ent

    def named_outputs(self, x):
        return {"predictive": self.logits[: x.shape[0]], "expected_entropy": self.ent[: x.shape[0]]}


def test_kl_mae_bias_and_mutual_information_by_hand():
    p_t = torch.tensor([[0.5, 0.5], [0.8, 0.2]], dtype=torch.float64)
    p_s = torch.tensor([[0.25, 0.75], [0.8, 0.2]], dtype=torch.float64)
    ent_t = torch.tensor([[0.6], [0.4]], dtype=torch.float64)
    ent_s = torch.tensor([[0.5], [0.7]], dtype=torch.float64)
    rec = evaluate(_Fixed(p_s, ent_s), torch.zeros(2, 1), Y, {"predictive": p_t, "expected_entropy": ent_t})
    kl0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # the second example is identical
    assert rec["kl"] == pytest.approx(kl0 / 2)
    kl_st0 = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert rec["kl_st"] == pytest.approx(kl_st0 / 2)
    assert rec["prob_mae"] == pytest.approx((0.25 + 0.25 + 0 + 0) / 4)
    assert rec["expected_entropy_mae"] == pytest.approx((0.1 + 0.3) / 2)
    assert rec["expected_entropy_bias"] == pytest.approx((-0.1 + 0.3) / 2)  # student - teacher

    def h(p):
        return -sum(v * math.log(v) for v in p)

    mi_t = [h([0.5, 0.5]) - 0.6, h([0.8, 0.2]) - 0.4]
    mi_s = [h([0.25, 0.75]) - 0.5, h([0.8, 0.2]) - 0.7]
    assert rec["mi_mae"] == pytest.approx((abs(mi_t[0] - mi_s[0]) + abs(mi_t[1] - mi_s[1])) / 2)
    assert rec["mi_bias"] == pytest.approx((mi_s[0] - mi_t[0] + mi_s[1] - mi_t[1]) / 2)
    assert rec["student_acc"] == 0.0 and rec["teacher_acc"] == 0.5  # the teacher's tie goes to class 0


def test_teacher_means_on_matches_a_plain_loop_over_the_bank():
    from types import SimpleNamespace

    from gped_search.downstream import teacher_means_on
    from gped_search.models import build, teacher_arch
    from gped_search.posterior.expectations import resolve
    from gped_search.posterior.result import TeacherResult

    torch.manual_seed(0)
    arch = teacher_arch("mlp", (1, 4, 4), 3, widths=(5,))
    nets = [build(arch) for _ in range(4)]
    bank = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in nets]) for n, _ in nets[0].named_parameters()}
    teacher = TeacherResult(arch, {}, None, None, bank, {})
    exps = resolve(["predictive", "expected_entropy"])
    p = SimpleNamespace(bundle=SimpleNamespace(n_classes=3), exps=exps)
    x = torch.rand(7, 1, 4, 4)
    got = teacher_means_on(teacher, x, p, chunk=3)
    probs = torch.stack([torch.softmax(m(x)[0], -1) for m in nets])  # (S, N, C)
    want_pred = probs.mean(0)
    want_ent = (-(probs * probs.log()).sum(-1)).mean(0)
    torch.testing.assert_close(got["predictive"], want_pred, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["expected_entropy"].reshape(-1), want_ent, rtol=1e-5, atol=1e-6)

