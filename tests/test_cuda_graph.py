"""The opt-in CUDA-graph SGLD step: falls back off CUDA; on CUDA it replays fresh randomness."""

import pytest
import torch

from gped_search.models import teacher_arch
from gped_search.posterior.sgld import SGLD


def _data(device, n=512):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x.flatten(1)[:, :32].sum(1) > x.flatten(1)[:, 32:].sum(1)).long()  # a learnable rule
    return x.to(device), y.to(device)


def _sampler(device, schedule="constant"):
    x, y = _data(device)
    return SGLD(teacher_arch("mlp", (1, 8, 8), 2, (32,)), x, y, step_size=1e-3, prior_precision=1.0,
                batch_size=64, schedule=schedule, seed=3), x, y


def test_capture_is_refused_off_cuda_and_the_eager_step_still_runs():
    s, _, _ = _sampler("cpu")
    before = [p.clone() for p in s.params]
    assert s.capture_cuda_graph() is False
    s.step()
    assert s.t == 1 and any(not torch.equal(a, b) for a, b in zip(before, s.params))


@pytest.mark.cuda
def test_cuda_graph_replays_fresh_noise_and_learns():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    s, x, y = _sampler("cuda")
    e, _, _ = _sampler("cuda")
    assert s.capture_cuda_graph() is True
    assert _sampler("cuda", "polynomial")[0].capture_cuda_graph() is False
    for _ in range(3):
        e.step()  # the eager twin takes the same 3 warm-up iterations
    states = []
    for _ in range(400):
        s.step()
        e.step()
        states.append(s.params[0].clone())
    torch.cuda.synchronize()
    assert s.is_finite() and not torch.equal(states[-1], states[-2])  # every replay moves the chain
    acc_graph = (s.logits(x)[0].argmax(1) == y).float().mean().item()
    acc_eager = (e.logits(x)[0].argmax(1) == y).float().mean().item()
    assert acc_graph > 0.8 and abs(acc_graph - acc_eager) < 0.1
