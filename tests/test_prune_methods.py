"""Pruning methods beside group LASSO (issue 20): exact budgets, exact removal, the regularisers'
gradients, and every method on every student family through prune -> save -> reload."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from conftest import tiny_engine
from torch import nn

from gped_search import engine as api
from gped_search.checkpoints import load_checkpoint, save_checkpoint
from gped_search.config import ConfigError, PruneConfig, PruneMethod, PruneRule, StudentFamily, load_study
from gped_search.models import build, student_arch
from gped_search.prune import METHODS, mask_model, params_after, prune_model, regulariser, unit_groups
from gped_search.prune.groups import dependency_graph, unit_groups_from_graph
from gped_search.prune.methods import round_keep_fractions

QUICKSTART = str(Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml")
HEADS = (("predictive", 0), ("expected_entropy", 1))
ARCHS = {
    "mlp": lambda: student_arch("mlp", (1, 8, 8), 10, HEADS, widths=(16, 12)),
    "cnn": lambda: student_arch("cnn", (1, 8, 8), 10, HEADS, m1=1.0, m2=0.5, kernel=3, padding=1),
}
RANKED = [m for m in METHODS if m != "group_lasso"] + ["group_lasso"]


def make(family: str) -> nn.Module:
    torch.manual_seed(0)
    return build(ARCHS[family]())


def example() -> torch.Tensor:
    return torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def batch() -> torch.Tensor:
    return torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(2))


def with_grads(model: nn.Module) -> nn.Module:
    """Gradients of a simple loss on :func:`batch`, as Taylor importance needs."""
    model.zero_grad()
    out = model.named_outputs(batch())
    (out["predictive"].logsumexp(-1).mean() + out["expected_entropy"].mean()).backward()
    return model


def kept_by_pruning(family: str, keep: list[int]) -> int:
    """Brute force: really prune a copy to ``keep`` units per layer and count its parameters."""
    model = make(family)
    dg = dependency_graph(model, example())
    for g, k in zip(unit_groups_from_graph(model, dg), keep):
        if k < g.n_units:
            dg.get_pruning_group(g.layer, g.prune_fn, list(range(k, g.n_units))).prune()
    return n_params(model)


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_params_after_counts_what_pruning_leaves(family):
    """The count predicted from the groups equals the pruned network's, for every uniform schedule."""
    model = make(family)
    groups = unit_groups(model, example())
    for keep in round_keep_fractions(groups)[::3]:
        removed = [g.n_units - k for g, k in zip(groups, keep)]
        assert params_after(model, groups, removed) == kept_by_pruning(family, keep)


@pytest.mark.parametrize("family", ["mlp", "cnn"])
@pytest.mark.parametrize("method", RANKED)
@pytest.mark.parametrize("budget", [0.25, 0.5, 0.75])
def test_budget_is_the_nearest_achievable(family, method, budget):
    """Every method lands on the uniform schedule nearest the requested parameter count (brute force)."""
    model = with_grads(make(family))
    total = n_params(model)
    best = min(abs(kept_by_pruning(family, k) - budget * total) for k in round_keep_fractions(unit_groups(model, example())))
    res = prune_model(model, example(), "budget", budget=budget, method=method)
    assert res.params_after == n_params(model)
    assert abs(res.params_after - budget * total) == best
    assert res.method == method and res.budget == budget
    model(example())  # still runs


def test_budget_is_close_on_the_paper_student():
    """On the 400-400 MLP student of MNIST the nearest schedule is within 0.5 % of the request."""
    model = build(student_arch("mlp", (1, 28, 28), 10, HEADS, widths=(400, 400)))
    x = torch.randn(2, 1, 28, 28)
    for budget in (0.25, 0.5, 0.75):
        m = copy.deepcopy(model)
        res = prune_model(m, x, "budget", budget=budget, method="magnitude")
        assert abs(res.params_after / res.params_before - budget) < 0.005, (budget, res.kept)


@pytest.mark.parametrize("family", ["mlp", "cnn"])
@pytest.mark.parametrize("method", RANKED)
def test_removing_zeroed_units_changes_no_output(family, method):
    """Units whose whole groups are zero score lowest under every criterion; removing them is exact.

    Taylor scores a unit that is dead on the gradient batch (ReLU output 0 throughout) 0 as well, so
    it may remove such a unit in a zeroed one's place; on that batch the outputs are still exact."""
    model = make(family)
    groups = unit_groups(model, example())
    zeroed = [list(range(1, g.n_units, 4))[: g.n_units // 4] for g in groups]  # every 4th unit
    assert all(len(z) == g.n_units // 4 for z, g in zip(zeroed, groups)), [g.n_units for g in groups]
    mask_model(model, zeroed, example())
    with_grads(model)
    model.eval()
    before = {k: v.detach().clone() for k, v in model.named_outputs(batch()).items()}
    # ratio 0.25 removes exactly as many units per layer as were zeroed
    res = prune_model(model, example(), "ratio", ratio=0.25, method=method)
    if method != "taylor":
        assert [sorted(r) for r in res.removed_idxs] == zeroed
    assert [len(r) for r in res.removed_idxs] == [len(z) for z in zeroed]
    after = model.named_outputs(batch())
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=1e-6)


def test_threshold_needs_group_lasso():
    with pytest.raises(ConfigError, match="threshold needs prune.method group_lasso"):
        PruneConfig(method=PruneMethod.magnitude)
    with pytest.raises(ValueError, match="ratio' or 'budget"):
        prune_model(make("mlp"), example(), "threshold", method="magnitude")
    with pytest.raises(ConfigError, match="search.space.method"):
        load_study(QUICKSTART, ["search.space.method=[magnitude, taylor]"])


def test_group_norm_regulariser_adds_torch_prunings_term():
    """The hook adds reg * gamma_u * w_u to each unit's incoming weights, gamma = 16^((max-s)/(max-min))
    with s the unit's group-magnitude score (GroupNormPruner's rule); the heads' own rows are untouched."""
    model = make("mlp")
    reg = 1e-2
    hook = regulariser(model, example(), "group_norm", reg)
    with_grads(model)
    before = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    dg = dependency_graph(model, example())
    groups = unit_groups_from_graph(model, dg)
    gammas = []
    for g in groups:
        s = tp.importance.GroupMagnitudeImportance(p=2)(dg.get_pruning_group(g.layer, g.prune_fn, list(range(g.n_units))))
        s = s.sqrt()
        gammas.append(16 ** ((s.max() - s) / (s.max() - s.min())))
    hook()
    weights = [g.layer.weight for g in groups] + [h.weight for h in model.heads]
    for i, w in enumerate(weights):  # rows of its own units, columns of the previous layer's units
        rows = gammas[i][:, None] if i < len(groups) else 0.0
        cols = gammas[min(i, len(groups)) - 1][None, :] if i > 0 else 0.0
        name = next(n for n, q in model.named_parameters() if q is w)
        torch.testing.assert_close(w.grad - before[name], reg * (rows + cols) * w.detach(), rtol=1e-4, atol=1e-9)
    for n, q in model.named_parameters():
        if n.startswith("heads") and n.endswith("bias"):
            torch.testing.assert_close(q.grad, before[n], rtol=0, atol=0)


def test_growing_reg_grows_on_weak_groups():
    """growing_reg's per-unit coefficient grows by delta_reg x (standardised weakness) every 10 steps."""
    model = make("mlp")
    hook = regulariser(model, example(), "growing_reg", reg=1e-4, delta_reg=1e-3)
    with_grads(model)
    first = [m for m in model.body if isinstance(m, nn.Linear)][0]
    for _ in range(21):  # three update_reg calls (steps 0, 10, 20)
        g0 = first.weight.grad.detach().clone()
        hook()
    added = (first.weight.grad - g0) / first.weight.detach()
    per_unit = added.median(1).values
    assert per_unit.min() >= 1e-4 - 1e-9 and per_unit.max() <= 1e-4 + 3e-3 + 1e-9
    assert per_unit.max() > per_unit.min()  # weak groups got more


@pytest.fixture(scope="module")
def tiny():
    yield from tiny_engine("distill.steps=30", "prune.finetune_steps=12")


@pytest.mark.parametrize("family", ["mlp", "cnn"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_prunes_saves_and_reloads(tiny, tmp_path, family, method):
    """The contract: train (with the method's regulariser) -> 2 rounds of prune + fine-tune to half the
    parameters -> save -> weights_only reload gives the same outputs and records the method."""
    cfg, p, teacher = tiny
    student = replace(cfg.student, family=StudentFamily(family), widths=(48, 32), m1=0.5, m2=0.5)
    prune = replace(cfg.prune, method=PruneMethod(method), rule=PruneRule.budget, budget=0.5, rounds=2,
                    lambda_g=1e-3, reg=1e-3, taylor_batches=2)
    res = api.train_trial(replace(p, cfg=replace(cfg, student=student, prune=prune)), teacher, student, prune, seed=3)
    model, rec, info = res.model, res.metrics, res.pruning
    assert info["method"] == method and rec["prune_method"] == method and info["rounds"] == 2
    assert info["finetune_steps"] == 12
    assert rec["params"] == info["params_after"]
    assert abs(info["params_kept_fraction"] - 0.5) < 0.1
    path = tmp_path / "s.pt"
    save_checkpoint(path, model, pruning=info)
    loaded, meta = load_checkpoint(path)
    assert meta["pruning"]["method"] == method
    x = p.bundle.test.x[:7]
    model.eval()
    for k, v in model.named_outputs(x).items():
        torch.testing.assert_close(loaded.named_outputs(x)[k], v)


def test_batch_mode_runs_each_schedule(tiny):
    """train_trials (lockstep) runs every trial's own multi-round schedule: each trial ends on its budget with
    every round's fine-tuning, exactly where that trial ends when trained alone from the same seeds (the
    rounds of a batch are fine-tuned in groups by step count, so a slip in the grouping or the seeds shows)."""
    cfg, p, teacher = tiny
    configs = []
    for method, rounds in (("magnitude", 1), ("taylor", 3), ("group_norm", 2)):
        prune = replace(cfg.prune, method=PruneMethod(method), rule=PruneRule.budget, budget=0.4, rounds=rounds,
                        taylor_batches=2)
        configs.append(replace(cfg, prune=prune))
    seeds = [11, 12, 13]
    out = api.train_trials(p, teacher, configs, seeds)
    for c, seed, r in zip(configs, seeds, out):
        assert isinstance(r, api.StudentResult), r
        info = r.pruning
        assert info["method"] == c.prune.method.value and info["rounds"] == c.prune.rounds
        assert info["finetune_steps"] == 12 and abs(info["params_kept_fraction"] - 0.4) < 0.1
        assert r.metrics["params"] == info["params_after"] == sum(t.numel() for t in r.model.parameters())
        alone = api.train_trial(replace(p, cfg=c), teacher, c.student, c.prune, seed=seed, data_seed=seeds[0])
        assert alone.pruning == info
        for a, b in zip(alone.model.parameters(), r.model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert alone.metrics["kl"] == pytest.approx(r.metrics["kl"], rel=1e-5)
