"""Group-LASSO groups, penalty and structured pruning (tiny CPU models)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from gped_search.models import build, student_arch
from gped_search.prune import (
    group_lasso_penalty,
    group_norms,
    mask_model,
    prune_model,
    select_units,
    unit_groups,
)

HEADS = (("predictive", 0), ("expected_entropy", 1))
ARCHS = {
    "mlp": lambda: student_arch("mlp", (1, 8, 8), 10, HEADS, widths=(16, 12)),
    "cnn": lambda: student_arch("cnn", (1, 8, 8), 10, HEADS, m1=1.0, m2=0.5, kernel=3, padding=1),
}


def make(family: str, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return build(ARCHS[family]()).to(dtype)


def example(dtype=torch.float32) -> torch.Tensor:
    return torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=dtype)


def naive_groups(model: nn.Module) -> list[list[list[torch.Tensor]]]:
    """Per layer, per unit, the list of coupled slices -- written by hand, no dependency graph."""
    layers = [m for m in model.body if isinstance(m, (nn.Conv2d, nn.Linear))]
    out = []
    for i, layer in enumerate(layers):
        consumers = [layers[i + 1]] if i + 1 < len(layers) else list(model.heads)
        n = layer.weight.shape[0]
        per_unit = []
        for u in range(n):
            parts = [layer.weight[u].flatten(), layer.bias[u : u + 1]]
            for c in consumers:
                if isinstance(layer, nn.Conv2d) and isinstance(c, nn.Linear):  # conv -> flatten -> fc
                    hw = c.in_features // n
                    parts.append(c.weight[:, u * hw : (u + 1) * hw].flatten())
                else:
                    parts.append(c.weight[:, u].flatten())
            per_unit.append(parts)
        out.append(per_unit)
    return out


def naive_penalty(model: nn.Module) -> torch.Tensor:
    total = torch.zeros((), dtype=next(model.parameters()).dtype)
    for layer in naive_groups(model):
        for parts in layer:
            total = total + torch.sqrt(sum((p * p).sum() for p in parts))
    return total


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_penalty_value_and_gradient_match_naive_loop(family):
    model = make(family, torch.float64)
    groups = unit_groups(model, example(torch.float64))
    assert [g.name.startswith("body.") for g in groups] == [True] * len(groups)  # heads never roots
    params = list(model.parameters())
    fast = group_lasso_penalty(groups)
    g_fast = torch.autograd.grad(fast, params, allow_unused=True, materialize_grads=True)
    slow = naive_penalty(model)
    g_slow = torch.autograd.grad(slow, params, allow_unused=True, materialize_grads=True)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # per-layer norms agree with the hand-written groups too
    for norms, layer in zip(group_norms(groups), naive_groups(model)):
        expect = torch.stack([torch.sqrt(sum((p * p).sum() for p in parts)) for parts in layer])
        torch.testing.assert_close(norms, expect)


def test_groups_cover_flatten_columns_and_heads():
    model = make("cnn")
    groups = unit_groups(model, example())
    conv2, fc = groups[1], groups[2]
    cols = [s for s in conv2.slices if s.role == "out"]
    assert len(cols) == 1 and cols[0].module_name == "body.7" and cols[0].dim == 1
    hw = model.body[7].in_features // model.body[3].out_channels
    assert torch.equal(cols[0].unit, torch.arange(cols[0].idx.numel()) // hw)
    assert {s.module_name for s in fc.slices if s.role == "out"} == {"heads.0", "heads.1"}


def test_unit_groups_keeps_training_mode():
    model = make("mlp").train()
    unit_groups(model, example())
    assert model.training


def test_zero_group_has_finite_zero_gradient():
    model = make("cnn")
    x = example()
    mask_model(model, [[0], [3], [5]], x)
    groups = unit_groups(model, x)
    pen = group_lasso_penalty(groups)
    pen.backward()  # head biases belong to no group: no gradient
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    assert torch.count_nonzero(model.body[0].weight.grad[0]) == 0
    assert group_norms(groups)[1][3] == 0


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.99, 1.0])
def test_ratio_rule_prunes_expected_count(ratio):
    model = make("cnn")
    before = [10, 20, 40]
    res = prune_model(model, example(), rule="ratio", ratio=ratio)
    expect = [min(math.floor(ratio * n), n - 1) for n in before]
    assert res.removed == expect
    assert res.kept == [n - r for n, r in zip(before, expect)]
    assert list(model.arch.channels) + list(model.arch.hidden) == res.kept


def test_threshold_never_removes_last_unit():
    model = make("mlp")
    with torch.no_grad():
        model.body[1].weight.mul_(1e-6)  # every unit of layer 1 is below tau ...
        model.body[1].bias.mul_(1e-6)
        model.body[1].weight[5, 0] = 5e-4  # ... unit 5 the largest, still <= tau
    res = prune_model(model, example(), rule="threshold", tau=1e-3)
    assert res.kept[0] == 1 and res.removed_idxs[0] == [u for u in range(16) if u != 5]
    assert res.removed[1] == 0
    assert model(example())[0].shape == (3, 10)


def test_threshold_uses_all_incoming_weights():
    scores = torch.tensor([0.0, 1e-3, 1.1e-3, 5.0])
    assert select_units(scores, "threshold", tau=1e-3) == [0, 1]
    model = make("mlp")
    with torch.no_grad():
        model.body[3].weight[[2, 7]] = 0.0
        model.body[3].bias[[2, 7]] = 0.0
        model.body[3].weight[7, 4] = 2e-3  # one incoming weight above tau keeps unit 7
    res = prune_model(model, example(), rule="threshold", tau=1e-3)
    assert res.removed_idxs == [[], [2]] and res.score == "incoming_max"


@pytest.mark.parametrize("family", ["mlp", "cnn"])
@pytest.mark.parametrize("rule", ["ratio", "threshold"])
def test_pruned_equals_masked(family, rule):
    model = make(family)
    x = example()
    if rule == "threshold":
        first = model.body[0] if family == "cnn" else model.body[1]
        with torch.no_grad():
            first.weight[[1, 4]] = 0.0
            first.bias[[1, 4]] = 0.0
    original = copy.deepcopy(model)
    res = prune_model(model, x, rule=rule, ratio=0.4)
    assert sum(res.removed) > 0
    masked = mask_model(original, res.removed_idxs, x).eval()
    model.eval()
    for a, b in zip(model(x), masked(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
