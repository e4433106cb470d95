"""Beyond the paper (issue 19): derivative matching, relational distillation, adversarial robustness.

Oracles: finite differences for every directional derivative, a brute-force loop for the similarity
graph, and binary logistic regression for the attacks (its FGSM step is -eps * sign(w) for label 1).
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import one_error_line, tiny_engine, tiny_sets
from torch import nn
from torch.nn import functional as F

from gped_search import engine as api
from gped_search.cli import main
from gped_search.distill.auxiliary import (
    derivative_loss,
    random_directions,
    relational_loss,
    similarity_graph,
    student_predictive_jvp,
    teacher_predictive_jvp,
)
from gped_search.metrics.adversarial import (
    attack_record,
    fgsm,
    pgd,
    student_probs_fn,
    teacher_probs_fn,
)
from gped_search.models import build, student_arch, teacher_arch

QUICKSTART = str(Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml")
HEADS = (("predictive", 0), ("expected_entropy", 1))


def _bank(model: nn.Module, s: int = 3) -> dict[str, torch.Tensor]:
    """``s`` perturbed copies of ``model``'s parameters, stacked like a teacher's sample bank."""
    g = torch.Generator().manual_seed(4)
    return {
        n: torch.stack([p.detach() + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype) for _ in range(s)])
        for n, p in model.named_parameters()
    }


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_teacher_derivative_matches_finite_differences(kind):
    """(1/S) sum_s J_{p_s} v over the bank = central differences of the bank's mean predictive."""
    torch.manual_seed(0)
    arch = teacher_arch(kind, (1, 28, 28), 10, (20, 16), None, 0)
    model = build(arch).double().eval()
    bank = _bank(model)
    x = torch.rand(4, 1, 28, 28, dtype=torch.double)
    v = random_directions(x, 2, torch.Generator().manual_seed(1))
    jv = teacher_predictive_jvp(model, bank, x, v, temperature=1.5)
    probs = teacher_probs_fn(model, bank, temperature=1.5)
    h = 1e-5
    xs = x.repeat(2, 1, 1, 1)
    fd = (probs(xs + h * v) - probs(xs - h * v)) / (2 * h)
    torch.testing.assert_close(jv, fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_student_derivative_and_its_weight_gradient_match_finite_differences(family):
    torch.manual_seed(0)
    kw = {"widths": (12, 8)} if family == "mlp" else {"m1": 0.5, "m2": 0.5}
    model = build(student_arch(family, (1, 28, 28), 10, HEADS, **kw)).double()
    x = torch.rand(3, 1, 28, 28, dtype=torch.double)
    v = random_directions(x, 1, torch.Generator().manual_seed(2))
    target = torch.randn(3, 10, dtype=torch.double) * 1e-2
    probs = student_probs_fn(model)
    h = 1e-5
    jv = student_predictive_jvp(model, x, v)
    torch.testing.assert_close(jv, (probs(x + h * v) - probs(x - h * v)) / (2 * h), rtol=1e-5, atol=1e-8)
    loss = derivative_loss(jv, target)
    loss.backward()
    w = next(model.parameters())
    with torch.no_grad():
        w.view(-1)[5] += h
        up = derivative_loss(student_predictive_jvp(model, x, v), target)
        w.view(-1)[5] -= 2 * h
        down = derivative_loss(student_predictive_jvp(model, x, v), target)
        w.view(-1)[5] += h
    assert math.isclose(w.grad.view(-1)[5].item(), ((up - down) / (2 * h)).item(), rel_tol=1e-4, abs_tol=1e-10)


def test_random_projections_estimate_the_jacobian_distance():
    """E_v ||(J_a - J_b) v||^2 = ||J_a - J_b||_F^2 / D for v uniform on the unit sphere (Monte Carlo)."""
    d, c = 30, 4
    delta = torch.randn(c, d, dtype=torch.double, generator=torch.Generator().manual_seed(3))
    x = torch.zeros(20000, d, dtype=torch.double)
    v = random_directions(x, 1, torch.Generator().manual_seed(5))
    assert torch.allclose(v.norm(dim=1), torch.ones(20000, dtype=torch.double))
    est = (v @ delta.T).pow(2).sum(1).mean()
    assert abs(est / (delta.pow(2).sum() / d) - 1) < 0.03


def test_similarity_graph_and_relational_loss_by_brute_force():
    g = torch.Generator().manual_seed(0)
    s = F.softmax(torch.randn(6, 10, generator=g), -1)
    t = F.softmax(torch.randn(6, 10, generator=g), -1)
    graph = similarity_graph(s)
    for i in range(6):
        for j in range(6):
            want = float(s[i] @ s[j] / (s[i].norm() * s[j].norm()))
            assert math.isclose(float(graph[i, j]), want, rel_tol=1e-5)
    brute = sum(
        (float(similarity_graph(s)[i, j]) - float(similarity_graph(t)[i, j])) ** 2 for i in range(6) for j in range(6)
    )
    assert math.isclose(float(relational_loss(s, t)), brute / 36, rel_tol=1e-5)
    assert float(relational_loss(t, t)) == pytest.approx(0.0, abs=1e-12)


class Logistic(nn.Module):
    """Binary logistic regression as a 2-class model: logits (0, w.x + b)."""

    def __init__(self, d: int):
        super().__init__()
        g = torch.Generator().manual_seed(6)
        self.w = nn.Parameter(torch.randn(d, generator=g))
        self.b = nn.Parameter(torch.zeros(()))

    def probs(self, x):
        z = x.flatten(1) @ self.w + self.b
        return F.softmax(torch.stack([torch.zeros_like(z), z], 1), -1)


def test_fgsm_on_logistic_regression_is_minus_eps_sign_w():
    """For label 1 the loss -log sigma(w.x + b) falls along +w: FGSM moves every pixel by -eps sign(w_i)."""
    m = Logistic(16)
    x = 0.3 + 0.4 * torch.rand(5, 16, generator=torch.Generator().manual_seed(7))  # away from 0 and 1
    for label, sign in ((1, -1.0), (0, 1.0)):
        y = torch.full((5,), label)
        adv = fgsm(m.probs, x, y, 0.1)
        torch.testing.assert_close(adv, x + sign * 0.1 * m.w.detach().sign().expand_as(x))


def test_pgd_reaches_the_linear_optimum_and_never_leaves_the_ball():
    m = Logistic(16)
    x = torch.rand(64, 16, generator=torch.Generator().manual_seed(8))
    y = torch.ones(64, dtype=torch.long)
    adv = pgd(m.probs, x, y, 0.2, steps=20, generator=torch.Generator().manual_seed(0))
    # the loss is monotone along -w: PGD ends at the box corner, clipped to [0, 1]
    want = torch.minimum(torch.maximum(x - 0.2 * m.w.detach().sign(), (x - 0.2).clamp(0, 1)), (x + 0.2).clamp(0, 1))
    torch.testing.assert_close(adv, want)
    for family, kw in (("mlp", {"widths": (20,)}), ("cnn", {"m1": 0.5, "m2": 0.5})):
        model = build(student_arch(family, (1, 28, 28), 10, HEADS, **kw)).eval()
        xi = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(9))
        xi[:4] = 0.0  # pixels on the box's edge
        yi = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(10))
        for eps in (0.05, 0.1, 0.2):
            a = pgd(student_probs_fn(model), xi, yi, eps, steps=7, generator=torch.Generator().manual_seed(1))
            assert (a - xi).abs().max() <= eps + 1e-6
            assert a.min() >= 0.0 and a.max() <= 1.0


def test_attack_lowers_accuracy_and_records_rows():
    torch.manual_seed(0)
    model = build(student_arch("mlp", (1, 8, 8), 10, HEADS, widths=(16,))).eval()
    x = torch.rand(40, 1, 8, 8)
    with torch.no_grad():
        y = student_probs_fn(model)(x).argmax(1)  # 100 % clean accuracy by construction
    rows = attack_record(student_probs_fn(model), x, y, (0.1, 0.3), ("fgsm", "pgd"))
    assert [r["attack"] for r in rows] == ["clean", "fgsm", "fgsm", "pgd", "pgd"]
    assert rows[0]["accuracy"] == 1.0
    assert all(r["accuracy"] < 1.0 for r in rows[1:])
    assert all(r["linf"] <= r["eps"] + 1e-6 for r in rows)


@pytest.fixture(scope="module")
def tiny():
    yield from tiny_engine("distill.steps=30", "prune.finetune_steps=0")


def test_auxiliary_losses_train_and_add_to_the_loss(tiny):
    """Trials with derivative matching, relational distillation and a scarce transfer set train to finite
    records; on one batch the loss is the plain loss plus each weighted term."""
    cfg, p, teacher = tiny
    d = replace(cfg.distill, derivative_weight=5.0, derivative_directions=2, relational_weight=2.0, transfer_size=50)
    c = replace(cfg, distill=d)
    res = api.train_trial(replace(p, cfg=c), teacher, c.student, c.prune, seed=1)
    model, rec = res.model, res.metrics
    assert math.isfinite(rec["kl"]) and all(math.isfinite(v) for _, v in res.curve)
    from gped_search.distill.loop import _artifact_targets, _with_derivatives

    gen = torch.Generator().manual_seed(0)
    x = p.bundle.transfer[:20]
    idx = torch.arange(20)
    targets = _with_derivatives(_artifact_targets(teacher, d, p.exps, gen, x.device, 50), teacher, [d], 0)(idx, x)
    plain = api.make_trainer(model, p, cfg.distill).loss(x, targets)
    full = api.make_trainer(model, p, d).loss(x, targets)
    model.train()
    extra = d.relational_weight * relational_loss(F.softmax(model.named_outputs(x)["predictive"], -1),
                                                  targets["predictive"])
    extra = extra + d.derivative_weight * derivative_loss(student_predictive_jvp(model, x, targets["_dir"]),
                                                          targets["_jvp"])
    assert full.item() == pytest.approx((plain + extra).item(), rel=1e-5)
    assert targets["_dir"].shape[0] == 40
    # a lockstep batch whose study has no derivative matching still gets derivatives for its trial that has
    sub = replace(d, derivative_samples=2)
    t2 = _with_derivatives(_artifact_targets(teacher, d, p.exps, gen, x.device, 50), teacher, [cfg.distill, sub], 0)
    assert t2(idx, x)["_jvp"].shape == (40, 10)


def test_a_searched_derivative_weight_trains_in_lockstep(tiny):
    """derivative_weight searched per trial (the study's own is 0): the batch computes the derivatives, the
    trial that matches them learns from them (it ends elsewhere than the same student without them, and where
    it ends trained alone), and its batch-mate without them is untouched."""
    cfg, p, teacher = tiny
    configs = [replace(cfg, distill=replace(cfg.distill, derivative_weight=w, derivative_samples=2)) for w in (0.0, 50.0)]
    out = api.train_trials(p, teacher, configs, [1, 2])
    plain = api.train_trials(p, teacher, [configs[0], configs[0]], [1, 2])  # the same students, neither matching
    assert all(isinstance(r, api.StudentResult) for r in out + plain), out + plain
    for a, b in zip(out[0].model.parameters(), plain[0].model.parameters()):
        torch.testing.assert_close(a, b)
    assert not all(torch.allclose(a, b) for a, b in zip(out[1].model.parameters(), plain[1].model.parameters()))
    c = configs[1]
    alone = api.train_trial(replace(p, cfg=c), teacher, c.student, c.prune, seed=2, data_seed=1)
    for a, b in zip(alone.model.parameters(), out[1].model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_online_distill_refuses_derivative_matching(tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["distill", QUICKSTART, *tiny_sets(tmp_path, "distill.derivative_weight=1", "distill.target_mode=online")])
    assert rc == 2 and "distill.derivative_weight" in one_error_line(err.getvalue())


def test_robust_acc_as_objective_and_the_robustness_command(tmp_path):
    """A study with robust_acc as an objective records it per trial; `robustness` writes its table."""
    s = tiny_sets(tmp_path, "search.objectives={kl: minimize, robust_acc: maximize}", "search.robust_n=64",
                  "search.robust_steps=3")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", QUICKSTART, "--n-trials", "2", "--no-progress", "--no-report", *s]) == 0
    import optuna

    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{tmp_path / 'quickstart' / 'study.db'}")
    for t in study.get_trials():
        assert 0.0 <= t.user_attrs["robust_acc"] <= 1.0
        assert t.user_attrs["robust_error"] == pytest.approx(1 - t.user_attrs["robust_acc"])
        assert 0.0 <= t.user_attrs["test_robust_acc"] <= t.user_attrs["test_student_acc"] + 0.1
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["robustness", QUICKSTART, *s, "--trials", "0", "--n", "50", "--pgd-steps", "3",
                   "--eps", "0.1,0.3", "--baseline-steps", "20", "--out", str(tmp_path / "rob")])
    assert rc == 0, out.getvalue()
    import pandas as pd

    table = pd.read_csv(tmp_path / "rob" / "robustness.csv")
    assert set(table["attack"]) == {"clean", "fgsm", "pgd"} and len(set(table["model"])) == 3
    assert (tmp_path / "rob" / "robustness.png").stat().st_size > 0
    teacher = table[table["model"].str.startswith("teacher")]
    assert teacher["mi"].notna().all()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["robustness", QUICKSTART, *s, "--eps", "0.1,abc"])
    assert rc == 2 and "--eps" in one_error_line(err.getvalue())
    with contextlib.redirect_stderr(err := io.StringIO()):
        rc = main(["robustness", QUICKSTART, *s, "--attacks", "fgsm,cw"])
    assert rc == 2 and "cw" in one_error_line(err.getvalue()) and "pgd" in err.getvalue()


def test_searched_derivative_and_relational_weights_through_the_cli(tmp_path):
    """`gped-search run` with derivative_weight and relational_weight in the search space on a scarce
    transfer set: every trial completes and records its weights."""
    space = "search.space={mlp_depth: 1, mlp_width: [16], derivative_weight: [0.0, 50.0], relational_weight: [0.0, 5.0]}"
    s = tiny_sets(tmp_path, space, "search.sampler=grid", "search.batch=4", "distill.transfer_size=64",
                  "distill.derivative_samples=2")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", QUICKSTART, "--n-trials", "4", "--no-progress", "--no-report", *s]) == 0
    import optuna

    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{tmp_path / 'quickstart' / 'study.db'}")
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 4
    assert {(t.params["derivative_weight"], t.params["relational_weight"]) for t in done} == {
        (0.0, 0.0), (0.0, 5.0), (50.0, 0.0), (50.0, 5.0)}
