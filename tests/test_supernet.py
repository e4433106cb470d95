"""The width supernet's parts against oracles: slices against separately built networks, the space's
configurations against brute-force enumeration, non-dominated ranks against a brute-force sort."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import optuna
import pytest
import torch

from gped_search.config import study_from_dict
from gped_search.models import build, student_arch
from gped_search.search.front import keep_best, nondominated_ranks, spread
from gped_search.search.space import parse_space, suggest
from gped_search.supernet.slicing import (
    SliceError,
    add_depth_heads,
    check_slice,
    extract,
    sliced_outputs,
    supernet_arch,
)
from gped_search.supernet.space import ArchSpace

HEADS = (("predictive", 0), ("expected_entropy", 1))


def _mlp(widths, **kw):
    return student_arch("mlp", (1, 8, 8), 10, HEADS, widths, **kw)


def _cnn(m1, m2, **kw):
    return student_arch("cnn", (1, 28, 28), 10, HEADS, m1=m1, m2=m2, **kw)


def _by_hand(sup_net, sub):
    """``sub`` built alone, its weights copied slice by slice from the supernet's state dict (no :func:`extract`)."""
    small = build(sub)
    big = sup_net.state_dict()
    with torch.no_grad():
        for name, t in small.state_dict().items():
            src = big[name]
            t.copy_(src[tuple(slice(0, n) for n in t.shape)])
    return small.eval()


@pytest.mark.parametrize(
    "subs",
    [
        [_mlp((16,)), _mlp((5, 9)), _mlp((16, 16, 3)), _mlp((1,))],
        [_cnn(0.5, 0.25), _cnn(2.0, 1.5), _cnn(1.0, 1.0), _cnn(0.1, 0.1)],
        [_mlp((7, 4), temperature=2.0, linear_heads=("expected_entropy",))],
        [replace(_mlp((7, 4)), unit_heads=("expected_entropy",))],
    ],
)
def test_a_slice_equals_the_network_built_alone_with_the_sliced_weights(subs):
    torch.manual_seed(0)
    sup = supernet_arch(subs)
    net = build(sup).eval()
    x = torch.rand(5, *sup.in_shape)
    for sub in subs:
        ref = _by_hand(net, sub)(x)
        got = sliced_outputs(net, sub, x)
        ext = extract(net, sub).eval()(x)
        for i, name in enumerate(sub.head_names):
            assert torch.allclose(got[name], ref[i], atol=1e-6), (sub.describe(), name)
            assert torch.allclose(ext[i], ref[i], atol=1e-6)
    # the whole supernet is its own largest slice
    full = net(x)
    for i, name in enumerate(sup.head_names):
        assert torch.allclose(sliced_outputs(net, sup, x)[name], full[i], atol=1e-6)


def test_an_mlp_supernet_over_several_depths_has_heads_per_depth():
    torch.manual_seed(1)
    subs = [_mlp((6,)), _mlp((16, 5)), _mlp((3, 3, 3))]
    net = add_depth_heads(build(supernet_arch(subs)), {1, 2, 3}).eval()
    assert sorted(net.depth_heads) == ["1", "2"]  # depth 3 is the supernet's own heads
    x = torch.rand(4, 1, 8, 8)
    for sub in subs:
        ref = _by_hand(net, sub)
        heads = net.depth_heads[str(len(sub.hidden))] if len(sub.hidden) < 3 else net.heads
        with torch.no_grad():
            for src, dst in zip(heads, ref.heads):
                dst.weight.copy_(src.weight[:, : sub.hidden[-1]])
                dst.bias.copy_(src.bias)
        want = ref(x)
        got, ext = sliced_outputs(net, sub, x), extract(net, sub).eval()(x)
        for i, name in enumerate(sub.head_names):
            assert torch.allclose(got[name], want[i], atol=1e-6) and torch.allclose(ext[i], want[i], atol=1e-6)
    one = sliced_outputs(net, _mlp((6,)), x)["predictive"]
    two = sliced_outputs(net, _mlp((6, 6)), x)["predictive"]
    net.depth_heads["1"][0].weight.data.zero_()  # the 1-layer student reads its own heads only
    assert not torch.allclose(sliced_outputs(net, _mlp((6,)), x)["predictive"], one)
    assert torch.equal(sliced_outputs(net, _mlp((6, 6)), x)["predictive"], two)
    assert "depth_heads.1.0.weight" in net.state_dict()


def test_an_input_scale_is_kept_and_a_slice_outside_the_supernet_is_refused():
    sub = replace(_mlp((3,)), input_scale=255 / 126)
    net = build(replace(_mlp((8, 8)), input_scale=255 / 126)).eval()
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(sliced_outputs(net, sub, x)["predictive"], _by_hand(net, sub)(x)[0], atol=1e-6)
    with pytest.raises(SliceError):
        check_slice(net.arch, replace(_mlp((9,)), input_scale=255 / 126))  # wider than the supernet
    with pytest.raises(SliceError):
        check_slice(net.arch, replace(_mlp((4, 4, 4)), input_scale=255 / 126))  # deeper
    with pytest.raises(SliceError):
        check_slice(net.arch, _mlp((4,)))  # another input scale
    with pytest.raises(SliceError):
        supernet_arch([_mlp((4,)), _cnn(1, 1)])


def test_gradients_of_a_slice_reach_only_the_shared_leading_weights():
    net = build(_mlp((8, 8)))
    out = sliced_outputs(net, _mlp((3, 2)), torch.rand(4, 1, 8, 8))
    out["predictive"].sum().backward()
    w0, w1 = net.body[1].weight.grad, net.body[3].weight.grad
    assert w0[:3].abs().sum() > 0 and w0[3:].abs().sum() == 0
    assert w1[:2, :3].abs().sum() > 0 and w1[2:].abs().sum() == 0 and w1[:, 3:].abs().sum() == 0


# ------------------------------------------------------------------ the space's architectures


def _space(space, family="mlp", **student):
    cfg = study_from_dict({"student": {"family": family, **student}, "search": {"space": space, "sampler": "random"}})
    return cfg, ArchSpace(cfg, parse_space(cfg.search.space))


def test_configurations_list_every_architecture_of_a_small_space_as_a_trial_would_suggest_it():
    cfg, sp = _space(
        {
            "family": ["mlp", "cnn"],
            "mlp_depth": [1, 2],
            "mlp_width": [8, 32, 64],
            "m1": [0.5, 1.0],
            "lambda_g": [0, 1e-3],
        }
    )
    got = sp.configurations(limit=1000, seed=0)
    # brute force: 3 one-layer + 9 two-layer MLPs + 2 CNNs
    assert len(got) == 3 + 9 + 2 == sp.size()
    assert len({tuple(sorted(p.items())) for p in got}) == len(got)
    for params in got:  # an enqueued trial with these parameters gets the same student
        st = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        st.enqueue_trial(params)
        t = st.ask()
        assert suggest(t, cfg, parse_space(cfg.search.space)).cfg.student == sp.student(params)
    small, large = sp.extremes("mlp")
    assert sp.student(small).widths == (8,) and sp.student(large).widths == (64, 64)
    assert sp.student(sp.extremes("cnn")[0]).m1 == 0.5


def test_a_large_space_is_sampled_with_both_extremes_deterministically():
    _, sp = _space({"mlp_depth": [1, 2, 3], "mlp_width": {"low": 4, "high": 1000, "log": True}})
    a, b = sp.configurations(limit=50, seed=3), sp.configurations(limit=50, seed=3)
    assert a == b and len(a) == 50
    small, large = sp.extremes("mlp")
    assert small in a and large in a
    assert large == {"mlp_depth": 3, "width_0": 1000, "width_1": 1000, "width_2": 1000}
    assert all(4 <= v <= 1000 for p in a for k, v in p.items() if k.startswith("width_"))


def test_a_space_without_an_architecture_is_one_line():
    from gped_search.errors import ConfigError

    with pytest.raises(ConfigError, match="search.strategy supernet: search.space has no architecture"):
        _space({"lambda_g": [0, 1e-3]})


# ------------------------------------------------------------------ non-dominated ranks


def _brute_ranks(v):
    n = len(v)
    ranks, left, r = [None] * n, set(range(n)), 0
    while left:
        front = {i for i in left if not any(all(v[j] <= v[i]) and any(v[j] < v[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = r
        left -= front
        r += 1
    return ranks


def test_nondominated_ranks_equal_a_brute_force_sort():
    rng = np.random.default_rng(0)
    for trial in range(20):
        v = rng.integers(0, 6, size=(30, 2 + trial % 2)).astype(float)  # many ties
        assert nondominated_ranks(v, ["minimize"] * v.shape[1]).tolist() == _brute_ranks(v)
    v = rng.random((25, 2))
    flipped = nondominated_ranks(v * [1, -1], ["minimize", "maximize"])
    assert flipped.tolist() == _brute_ranks(v)


def test_keep_best_keeps_whole_ranks_and_never_splits_the_front_with_ties():
    v = np.array([[1, 5], [2, 4], [3, 3], [4, 2], [5, 1], [3, 5], [6, 6]], dtype=float)
    d = ["minimize", "minimize"]
    assert sorted(keep_best(v, d, 2).tolist()) == [0, 1, 2, 3, 4]  # the whole front: ties kept
    picked = keep_best(v, d, 2, ties=False)
    assert len(picked) == 2 and set(picked.tolist()) == {0, 4}  # the two ends of the front
    assert sorted(keep_best(v, d, 6).tolist()) == [0, 1, 2, 3, 4, 5]
    assert list(spread(v[:5], d, 3)) == [4, 2, 0]


def test_promotion_never_keeps_a_student_dominated_by_one_it_stops():
    """keep_best against brute force on random values with ties: the whole front is kept, at least k are
    kept, and no kept row is dominated by a stopped one."""
    rng = np.random.default_rng(1)
    for _ in range(40):
        n, k = int(rng.integers(2, 30)), int(rng.integers(1, 12))
        v = rng.integers(0, 5, size=(n, 2)).astype(float)
        kept = set(keep_best(v, ["minimize", "minimize"], k).tolist())
        ranks = _brute_ranks(v)
        assert {i for i in range(n) if ranks[i] == 0} <= kept
        assert len(kept) >= min(k, n)
        for i in kept:
            for j in set(range(n)) - kept:
                assert not (all(v[j] <= v[i]) and any(v[j] < v[i])), (v.tolist(), k, i, j)

