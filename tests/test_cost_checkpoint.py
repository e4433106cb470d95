"""Cost figures, latency, checkpoints, and the build -> penalise -> prune -> save -> load contract."""

from __future__ import annotations

import copy
import os
import pickle

import pytest
import torch

from gped_search.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from gped_search.metrics.cost import cost_figures, measure_latency
from gped_search.models import arch_of, build, student_arch
from gped_search.prune import group_lasso_penalty, mask_model, prune_model, unit_groups

HEADS = (("predictive", 0), ("expected_entropy", 1))
ARCHS = {
    "mlp": lambda: student_arch("mlp", (1, 8, 8), 10, HEADS, widths=(16, 12)),
    "mlp-dropout": lambda: student_arch("mlp", (1, 8, 8), 10, HEADS, widths=(16, 12), dropout=0.2),
    "cnn": lambda: student_arch("cnn", (1, 8, 8), 10, HEADS, m1=1.0, m2=0.5, kernel=3, padding=1),
}


def make(family: str):
    torch.manual_seed(0)
    return build(ARCHS[family]())


def example() -> torch.Tensor:
    return torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("family", list(ARCHS))
def test_student_contract(family, tmp_path):
    model = make(family)
    x = example()
    widths = list(model.arch.channels) + list(model.arch.hidden)
    out = model(x)
    assert [o.shape for o in out] == [(4, 10), (4, 1)]

    # penalise + backward (as in the sparse distillation phase)
    pen = group_lasso_penalty(unit_groups(model, x))
    (out[0].logsumexp(1).mean() + out[1].mean() + 1e-3 * pen).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.zero_grad()

    # zero two units per layer, so the threshold rule removes exactly those (exact pruning)
    drop = [[0, 3] for _ in widths]
    mask_model(model, drop, x)
    masked = copy.deepcopy(model).eval()
    before = cost_figures(model, x)
    res = prune_model(model, x, rule="threshold", tau=1e-3)
    assert res.removed_idxs == drop and res.kept == [w - 2 for w in widths]
    assert list(model.arch.channels) + list(model.arch.hidden) == res.kept
    assert model.arch == arch_of(model)
    model.eval()
    with torch.no_grad():
        pruned_out, masked_out = model(x), masked(x)
    assert [o.shape for o in pruned_out] == [(4, 10), (4, 1)]  # heads untouched
    for a, b in zip(pruned_out, masked_out):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)

    regrouped = unit_groups(model, x)  # groups are rebuilt for the new widths
    assert [g.n_units for g in regrouped] == res.kept
    group_lasso_penalty(regrouped).backward()
    assert model.body[-2 if family != "mlp-dropout" else -3].weight.grad is not None
    model.zero_grad()

    after = cost_figures(model, x)
    assert 0 < after["macs"] < before["macs"] and after["params"] < before["params"]

    path = save_checkpoint(tmp_path / "student.pt", model, config={"family": family, "lr": 1e-3},
                           metrics={"nll": 0.5}, pruning=res.to_dict(), extra=None)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "gped-search-student" and raw["version"] == 1
    loaded, meta = load_checkpoint(path)
    assert not loaded.training and meta["arch"] == arch_of(model).to_dict()
    assert arch_of(loaded) == model.arch and meta["pruning"]["kept"] == res.kept
    assert meta["config"] == {"family": family, "lr": 1e-3} and "state_dict" not in meta
    with torch.no_grad():
        for a, b in zip(loaded(x), pruned_out):
            assert torch.equal(a, b)
    assert os.listdir(tmp_path) == ["student.pt"]  # no temp file left behind


def test_cost_figures_by_hand():
    model = make("mlp")
    c = cost_figures(model, example())
    n = sum(p.numel() for p in model.parameters())
    assert c["params"] == n == 64 * 16 + 16 + 16 * 12 + 12 + 12 * 10 + 10 + 12 + 1
    assert c["bytes_fp32"] == 4 * n and c["bytes_fp16"] == 2 * n and c["buffers"] == 0
    macs = 64 * 16 + 16 * 12 + 12 * 10 + 12 * 1
    assert c["macs_conv_linear"] == macs
    assert c["macs"] == macs + (16 + 12 + 10 + 1) + (16 + 12)  # + bias adds + ReLU elements
    cnn = cost_figures(make("cnn"), example())
    assert cnn["macs_conv_linear"] == 64 * 10 * 9 + 16 * 20 * 90 + 80 * 40 + 40 * 11


def test_latency_fields_and_threads_restored():
    model = make("cnn").train()
    threads = torch.get_num_threads()
    r = measure_latency(model, (1, 8, 8), batch=2, device="cpu", threads=1, repeats=5, warmup=1)
    assert {"median_ms", "p10_ms", "p90_ms", "device", "threads", "batch", "repeats"} <= set(r)
    assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
    assert r["threads"] == 1 and r["batch"] == 2 and r["repeats"] == 5 and r["device"] == "cpu"
    assert torch.get_num_threads() == threads and model.training


def test_save_refuses_non_plain_metadata(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "x.pt", make("mlp"), config={"obj": object()})
    assert os.listdir(tmp_path) == []


def _good(tmp_path):
    return save_checkpoint(tmp_path / "good.pt", make("mlp"), config=None, metrics=None, pruning=None)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_checkpoint(tmp_path):
    data = _good(tmp_path).read_bytes()
    bad = tmp_path / "trunc.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        load_checkpoint(bad)


def test_random_bytes_checkpoint(tmp_path):
    bad = tmp_path / "random.pt"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="random.pt"):
        load_checkpoint(bad)


def test_foreign_torch_file(tmp_path):
    bad = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="not a gped-search-student"):
        load_checkpoint(bad)
    torch.save({**torch.load(_good(tmp_path), weights_only=True), "version": 99}, bad)
    with pytest.raises(CheckpointError, match="version"):
        load_checkpoint(bad)


class _Evil:
    marker = ""

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_pickle_with_code_is_refused(tmp_path, writer):
    evil = _Evil()
    evil.marker = str(tmp_path / "pwned")
    bad = tmp_path / "evil.pt"
    if writer == "torch":
        torch.save({"format": "gped-search-student", "payload": evil}, bad)
    else:
        bad.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(bad)
    assert not (tmp_path / "pwned").exists()
    evil.marker = str(tmp_path / "control")  # the payload is live under a plain unpickler
    pickle.loads(pickle.dumps(evil))
    assert (tmp_path / "control").is_dir()
