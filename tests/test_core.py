"""Core algorithms against oracles: SGLD on a Gaussian, expectations against brute force, occlusion,
distillation on digits, every model family, config and data errors, divergence.

Fast suite (tiny models, CPU, one thread); the ``cuda`` tests repeat the model and distillation
checks on a GPU and skip without one.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace

import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from gped_search import engine as api
from gped_search.config import (
    ConfigError,
    DataConfig,
    Dataset,
    TargetMode,
    load_study,
    parse_overrides,
    study_from_dict,
)
from gped_search.data import DataError, make_bundle, occlude, occlusion_positions
from gped_search.distill.loop import TeacherResult, run_teacher, train_student
from gped_search.distill.student import StudentTrainer
from gped_search.metrics.quality import evaluate
from gped_search.models import build, mlp_arch, student_arch, teacher_arch
from gped_search.posterior import expectations as ex
from gped_search.posterior.expectations import (
    PosteriorAccumulator,
    entropy,
    get_expectation,
    mutual_information,
    register_expectation,
    resolve,
)
from gped_search.posterior.sgld import SGLD, DivergenceError, sgld_update_, step_size_at

HEADS = (("predictive", 0), ("expected_entropy", 1))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models are launch-bound: one intra-op thread is faster, and immune to a busy machine
    (two OpenMP threads fighting other processes for two cores run ~30x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the expectation registry, so registrations do not leak into other tests."""
    monkeypatch.setattr(ex, "_REGISTRY", dict(ex._REGISTRY))
    return ex._REGISTRY


def needs_cuda():
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")


# --------------------------------------------------------------------------- SGLD on a Gaussian

def test_sgld_update_matches_gaussian_posterior():
    """Bayesian linear regression in 2-D: y = X w + e, e ~ N(0, s2), prior w ~ N(0, I / lam).

    The posterior is Gaussian with precision P = X'X / s2 + lam I and mean P^-1 X'y / s2. SGLD with
    the full-batch gradient is the unadjusted Langevin algorithm on it, whose stationary law is
    Gaussian with the *same* mean and covariance (P - eta P^2 / 4)^-1: an O(eta) bias of relative size
    eta * lambda_max(P) / 4 in the stiffest direction. 4000 independent chains run side by side in one
    (C, 2) tensor (sgld_update_ is elementwise) from w = 0.
    """
    g = torch.Generator().manual_seed(0)
    dt = torch.float64
    n, s2, lam = 50, 1.0, 1.0
    x1 = torch.randn(n, generator=g, dtype=dt)
    X = torch.stack([x1, 0.6 * x1 + 0.8 * torch.randn(n, generator=g, dtype=dt)], 1)  # correlated inputs
    y = X @ torch.tensor([1.5, -0.7], dtype=dt) + math.sqrt(s2) * torch.randn(n, generator=g, dtype=dt)
    P = X.T @ X / s2 + lam * torch.eye(2, dtype=dt)
    mu = torch.linalg.solve(P, X.T @ y / s2)
    cov = torch.linalg.inv(P)
    evals = torch.linalg.eigvalsh(P)
    eta = 0.04 / float(evals.max())  # eta * lambda_max = 0.04: discretisation bias 1 %

    # Burn-in: the slowest mode forgets w = 0 at rate eta lambda_min / 2 per step, ~10 e-folds here.
    chains, burn, keep, every = 4000, 3000, 2000, 10
    w = torch.zeros(chains, 2, dtype=dt)
    s1 = torch.zeros(2, dtype=dt)
    sxx = torch.zeros(2, 2, dtype=dt)
    m = 0
    for t in range(burn + keep):
        grad_mean_nll = -((y - w @ X.T) @ X) / (n * s2)  # gradient of the *mean* NLL, (C, 2)
        params = [w]
        sgld_update_(params, [grad_mean_nll], [torch.randn(w.shape, generator=g, dtype=dt)], eta, lam, n)
        if t >= burn and t % every == 0:
            s1 += w.sum(0)
            sxx += w.T @ w
            m += chains
    mean = s1 / m
    emp_cov = sxx / m - torch.outer(mean, mean)

    # Monte Carlo error: the slowest mode is AR(1) with rho = 1 - eta lambda_min / 2; samples every
    # `every` steps have rho^every, integrated autocorrelation time tau = (1 + r) / (1 - r) (for the
    # mean; smaller for second moments). Effective samples = samples / tau.
    r = (1 - eta * float(evals.min()) / 2) ** every
    ess = m / ((1 + r) / (1 - r))
    sd = cov.diagonal().sqrt()
    # Mean: no discretisation bias for a Gaussian target, so only 5 Monte Carlo standard errors.
    assert torch.all((mean - mu).abs() < 5 * sd / math.sqrt(ess)), (mean, mu)
    # Covariance, relative to the posterior sd's: the O(eta) bias bound plus 5 standard errors of a
    # variance estimate (sqrt(2 / ess)).
    bias = eta * float(evals.max()) / 4
    tol = bias + 5 * math.sqrt(2 / ess)
    rel = (emp_cov - cov) / torch.outer(sd, sd)
    assert rel.abs().max() < tol, (emp_cov, cov, tol)
    assert tol < 0.1  # the test is sharp enough to catch a wrong noise scale (sqrt(2 eta): +100 %)
    # And the chain really is the Euler-Maruyama scheme: matches its exact stationary covariance.
    ula_cov = torch.linalg.inv(P - eta * P @ P / 4)
    assert ((emp_cov - ula_cov) / torch.outer(sd, sd)).abs().max() < 5 * math.sqrt(2 / ess)


def test_step_size_schedule():
    assert step_size_at(0, 1e-3) == step_size_at(10**6, 1e-3) == 1e-3
    assert step_size_at(0, 1e-3, "polynomial", t0=100, gamma=0.5) == pytest.approx(1e-3)
    assert step_size_at(300, 1e-3, "polynomial", t0=100, gamma=0.5) == pytest.approx(1e-3 / 2)


def _toy(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


TOY_ARCH = mlp_arch((1, 4, 4), 3, (8,))


def _sampler(chains=1, seed=0, **kw):
    x, y = _toy()
    args = dict(step_size=1e-3, prior_precision=1.0, batch_size=16, chains=chains, seed=seed)
    args.update(kw)
    return SGLD(TOY_ARCH, x, y, **args)


@pytest.mark.parametrize("chains", [1, 3])
def test_sgld_step_is_the_sgld_formula(chains):
    """Replaying one step by hand (same generator state, per-chain autograd) gives the same parameters,
    for both the plain-autograd path (1 chain) and the vmapped path (several)."""
    s = _sampler(chains, step_size=3e-3, prior_precision=2.0, schedule="polynomial", decay_t0=10.0)
    for _ in range(5):
        s.step()
    before = s.snapshot()
    state = s.gen.get_state()
    s.step()
    eta = step_size_at(s.t, 3e-3, "polynomial", 10.0, 0.55)
    assert s.step_size == eta

    g = torch.Generator().set_state(state)
    idx = torch.randint(0, s.n, (chains, s.batch_size), generator=g)
    model = build(TOY_ARCH).eval()
    grads = [[] for _ in before]
    for c in range(chains):
        leaves = [p[c].clone().requires_grad_() for p in before]
        logits = functional_call(model, dict(zip(s.names, leaves)), (s.x[idx[c]],))[0]
        for i, gr in enumerate(torch.autograd.grad(F.cross_entropy(logits, s.y[idx[c]]), leaves)):
            grads[i].append(gr)
    noise = [torch.randn(p.shape, generator=g) for p in before]
    for p0, gs, z, p1 in zip(before, grads, noise, s.params):
        expect = p0 - 0.5 * eta * (s.n * torch.stack(gs) + 2.0 * p0) + math.sqrt(eta) * z
        torch.testing.assert_close(p1, expect, rtol=1e-5, atol=1e-6)


def test_sgld_chains_differ_and_reproduce():
    s = _sampler(chains=4)
    for _ in range(30):
        s.step()
    assert s.is_finite()
    flat = torch.cat([p.reshape(4, -1) for p in s.params], 1)
    assert torch.isfinite(flat).all()
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.allclose(flat[a], flat[b]), (a, b)

    x = _toy()[0]
    logits = s.logits(x)
    assert logits.shape == (4, x.shape[0], 3)
    torch.testing.assert_close(s.logits(x, chunk=7), logits)
    # One state dict per chain, loadable into the plain network, gives that chain's logits.
    for c, sd in enumerate(s.state_dicts()):
        net = build(TOY_ARCH).eval()
        net.load_state_dict(sd)
        with torch.no_grad():
            torch.testing.assert_close(net(x)[0], logits[c], rtol=1e-5, atol=1e-5)

    def run(chains, seed):
        r = _sampler(chains, seed=seed)
        for _ in range(30):
            r.step()
        return torch.cat([p.reshape(chains, -1) for p in r.params], 1)

    torch.testing.assert_close(run(4, 0), flat, rtol=0, atol=0)  # same seed: bit-identical
    one = run(1, 0)
    torch.testing.assert_close(run(1, 0), one, rtol=0, atol=0)
    assert not torch.allclose(run(1, 1), one)  # another seed, another chain
    assert torch.isfinite(one).all()


# --------------------------------------------------------------------------- expectations

def _brute(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Averages over stored samples, written out directly."""
    p = logits.softmax(-1)
    h = -(p * p.log()).sum(-1)
    return {"predictive": p.mean(0), "expected_entropy": h.mean(0)[:, None],
            "top_prob": p.max(-1).values.mean(0)[:, None], "second_moment": (p**2).mean(0)}


def test_accumulator_matches_brute_force(registry):
    g = torch.Generator().manual_seed(3)
    S, N, K = 37, 23, 5
    logits = 3 * torch.randn(S, N, K, generator=g, dtype=torch.float64)
    register_expectation("top_prob", lambda z: z.softmax(-1).max(-1, keepdim=True).values, dim=1)
    register_expectation("second_moment", lambda z: z.softmax(-1) ** 2, dim=K, positive=True)
    exps = resolve(["predictive", "expected_entropy", "top_prob", "second_moment"])
    assert [e.out_dim(K) for e in exps] == [K, 1, 1, K]

    acc = PosteriorAccumulator(N, K, exps, "cpu")
    for a, b in [(0, 1), (1, 8), (8, 21), (21, S)]:  # uneven chunks
        acc.update(logits[a:b])
    assert acc.count == S
    means, brute = acc.means(), _brute(logits)
    assert set(means) == set(brute)
    for k in brute:
        torch.testing.assert_close(means[k].double(), brute[k], rtol=1e-5, atol=1e-6, msg=k)

    # Mutual information = predictive entropy - expected entropy (>= 0 by Jensen).
    mi = mutual_information(means["predictive"], means["expected_entropy"])
    p = logits.softmax(-1)
    brute_mi = -(brute["predictive"] * brute["predictive"].log()).sum(-1) - (-(p * p.log()).sum(-1)).mean(0)
    torch.testing.assert_close(mi.double(), brute_mi, rtol=1e-5, atol=1e-6)
    assert (mi > -1e-6).all() and mi.max() > 0.05
    assert mutual_information(means["predictive"], means["expected_entropy"][:, 0]).shape == (N,)


def test_mutual_information_zero_without_disagreement():
    z = torch.randn(1, 7, 4).expand(9, 7, 4)  # nine identical samples
    acc = PosteriorAccumulator(7, 4, resolve(["predictive", "expected_entropy"]), "cpu")
    acc.update(z)
    m = acc.means()
    torch.testing.assert_close(mutual_information(m["predictive"], m["expected_entropy"]), torch.zeros(7),
                               atol=1e-6, rtol=0)


def test_entropy_safe_at_zero():
    assert float(entropy(torch.tensor([1.0, 0.0]))) == 0.0
    assert float(entropy(torch.full((4,), 0.25))) == pytest.approx(math.log(4))


def test_registry_errors(registry):
    with pytest.raises(ValueError, match="already registered"):
        register_expectation("predictive", lambda z: z)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        register_expectation("bad", lambda z: z, dim=0)
    with pytest.raises(KeyError, match="unknown expectation 'nope'.*predictive.*register_expectation"):
        get_expectation("nope")
    e = register_expectation("predictive", lambda z: z.softmax(-1), dim=3, overwrite=True)
    assert get_expectation("predictive") is e
    with pytest.raises(RuntimeError, match="no posterior samples"):
        PosteriorAccumulator(2, 3, [e], "cpu").means()


def test_expectation_plugin_module(registry, tmp_path, monkeypatch):
    """A study names a module in distill.plugins; resolving imports it, which registers the expectation."""
    name = "gped_test_plugin_maxlogit"
    (tmp_path / f"{name}.py").write_text(
        "from gped_search.posterior.expectations import register_expectation\n"
        "register_expectation('max_logit_sq', lambda z: z.max(-1, keepdim=True).values ** 2, dim=1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        (e,) = resolve(["max_logit_sq"], plugins=[name])
        z = torch.randn(6, 5, 3)
        acc = PosteriorAccumulator(5, 3, [e], "cpu")
        acc.update(z)
        torch.testing.assert_close(acc.means()["max_logit_sq"], (z.max(-1).values ** 2).mean(0)[:, None])
    finally:
        sys.modules.pop(name, None)


# --------------------------------------------------------------------------- occlusion

def test_occlusion_one_square_patch_per_image():
    n, c, h, w, size = 64, 3, 12, 10, 4
    x = torch.ones(n, c, h, w)
    out = occlude(x, size, torch.Generator().manual_seed(5))
    assert torch.equal(x, torch.ones(n, c, h, w))  # a copy: the input is untouched
    zeros = out == 0
    assert (zeros.sum((2, 3)) == size * size).all()  # exactly size^2 zeros in every channel
    assert (zeros == zeros[:, :1]).all()  # the same patch in every channel
    pos = occlusion_positions(n, h, w, size, torch.Generator().manual_seed(5))
    for i in range(n):
        r, q = pos[i].tolist()
        assert 0 <= r <= h - size and 0 <= q <= w - size
        assert zeros[i, 0, r:r + size, q:q + size].all()  # ... and it is the square at those corners
    # Reproducible from the seed; another seed moves the patches.
    assert torch.equal(occlude(x, size, torch.Generator().manual_seed(5)), out)
    assert not torch.equal(occlude(x, size, torch.Generator().manual_seed(6)), out)
    assert not torch.equal(occlusion_positions(n, h, w, size, torch.Generator().manual_seed(6)), pos)


def test_occlusion_edges():
    x = torch.ones(5, 1, 6, 6)
    assert occlude(x, 0, torch.Generator()) is x  # size 0: no occlusion
    big = occlude(x, 9, torch.Generator().manual_seed(0))  # larger than the image: clipped to it
    assert (big == 0).all()
    # Every valid corner is reachable, the last one included (the reference's randint misses it).
    pos = occlusion_positions(4000, 8, 8, 3, torch.Generator().manual_seed(0))
    assert pos.min() == 0 and pos.max() == 8 - 3
    assert len(torch.unique(pos[:, 0] * 8 + pos[:, 1])) == 6 * 6


def test_bundle_occlusion_reproducible():
    cfg = DataConfig(mask_size=3, train_subset=200)
    a, b, c = make_bundle(cfg, seed=0), make_bundle(cfg, seed=0), make_bundle(cfg, seed=1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.test.x, c.test.x)
    assert len(a.train) == 200 and a.transfer.shape[0] > 200
    torch.testing.assert_close(a.transfer[:200], a.train.x)  # the teacher's subset of the transfer set
    for xs in (a.transfer, a.test.x):
        # every image has a 3x3 window of zeros (its patch)
        nonzero = F.max_pool2d((xs != 0).float(), 3, stride=1)
        assert (nonzero.flatten(1).min(1).values == 0).all()


# --------------------------------------------------------------------------- distillation on digits

def test_distillation_on_digits_lowers_kl():
    """Online distillation (the paper's algorithm) and cached-mean training from one short SGLD run."""
    cfg = study_from_dict({
        "name": "t", "seed": 0, "device": "cpu",
        "data": {"dataset": "digits"},
        "teacher": {"widths": [64, 64], "iterations": 1500, "burn_in": 300, "thin": 10, "step_size": 1.7e-4,
                    "bank_size": 8, "check_every": 500},
        "distill": {"target_mode": "online", "every": 4, "lr": 3e-3},
        "student": {"widths": [32]},
    })
    p = api.prepare(cfg)
    arch = api.student_arch_for(p, cfg.student)
    torch.manual_seed(1)
    untrained = build(arch)
    online = build(arch)
    online.load_state_dict(untrained.state_dict())
    trainer = api.make_trainer(online, p, cfg.distill)
    teacher = api.sample_teacher(p, (trainer,), progress=False)
    assert teacher.stats["student_steps"] == (1500 - 300) // 4
    assert teacher.metrics["teacher_acc"] > 0.9
    assert teacher.transfer is not None and teacher.transfer["predictive"].shape == (p.bundle.transfer.shape[0], 10)

    cached = build(arch)
    cached.load_state_dict(untrained.state_dict())
    dc = replace(cfg.distill, target_mode=TargetMode.cached)
    timing = train_student(api.make_trainer(cached, p, dc), teacher, p.bundle.transfer, 300, dc, cfg.data)
    assert timing["steps"] == 300

    x, y = p.bundle.test.x, p.bundle.test.y
    start = evaluate(untrained, x, y, teacher.test)
    assert start["kl"] > 1.0
    for model in (online, cached):
        rec = evaluate(model, x, y, teacher.test)
        assert rec["kl"] < 0.1 * start["kl"], rec
        assert rec["expected_entropy_mae"] < 0.6 * start["expected_entropy_mae"], rec
        assert rec["student_acc"] > 0.85


# --------------------------------------------------------------------------- model families

FAMILIES = {
    "teacher-mlp": lambda: teacher_arch("mlp", (1, 28, 28), 10),
    "teacher-cnn": lambda: teacher_arch("cnn", (1, 28, 28), 10),
    "teacher-cifar_cnn": lambda: teacher_arch("cifar_cnn", (3, 32, 32), 10),
    "student-mlp-1": lambda: student_arch("mlp", (1, 28, 28), 10, HEADS, widths=(17,)),
    "student-mlp-3": lambda: student_arch("mlp", (1, 8, 8), 10, HEADS, widths=(9, 7, 5), dropout=0.5),
    "student-cnn-odd": lambda: student_arch("cnn", (1, 28, 28), 10, HEADS, m1=0.01, m2=3.7),
    "student-cnn-cifar": lambda: student_arch("cnn", (3, 32, 32), 10, HEADS, m1=3.7, m2=0.01,
                                              teacher_cnn="cifar_cnn"),
    "student-cnn-digits": lambda: student_arch("cnn", (1, 8, 8), 10, HEADS, m1=0.5, m2=1.3, kernel=3, padding=1),
}
# Parameter counts from the reference (method.md's table).
PAPER_PARAMS = {"teacher-mlp": 478_410, "teacher-cnn": 29_880, "teacher-cifar_cnn": 184_808}


def _family_check(name: str, device: str) -> None:
    torch.manual_seed(0)
    arch = FAMILIES[name]()
    model = build(arch).to(device).train()
    x = torch.rand(3, *arch.in_shape, device=device)
    out = model(x)
    assert len(out) == len(arch.heads)
    assert out[0].shape == (3, 10)
    for (head, dim), o in zip(arch.heads[1:], out[1:]):
        assert o.shape == (3, dim) and (o >= 0).all(), head  # softplus heads are positive
    loss = F.cross_entropy(out[0], torch.arange(3, device=device)) + sum(o.mean() for o in out[1:])
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    if name in PAPER_PARAMS:
        assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMS[name]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_model_family_cpu(name):
    _family_check(name, "cpu")


def test_paper_student_sizes():
    mlp = build(student_arch("mlp", (1, 28, 28), 10, HEADS, widths=(400, 400)))
    cnn = build(student_arch("cnn", (1, 28, 28), 10, HEADS, m1=1.0, m2=1.0))
    assert sum(p.numel() for p in mlp.parameters()) == 478_811
    assert sum(p.numel() for p in cnn.parameters()) == 29_961
    tiny = student_arch("cnn", (1, 28, 28), 10, HEADS, m1=0.01, m2=3.7)
    assert tiny.channels == (1, 1) and tiny.hidden == (296,)  # widths never round below 1


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(FAMILIES))
def test_model_family_cuda(name):
    needs_cuda()
    _family_check(name, "cuda")


@pytest.mark.cuda
def test_sgld_and_distillation_cuda():
    needs_cuda()
    cfg = study_from_dict({
        "name": "t", "device": "cuda",
        "data": {"dataset": "digits", "mask_size": 2},
        "teacher": {"widths": [64, 64], "kernel": 3, "padding": 1, "iterations": 600, "burn_in": 100,
                    "thin": 10, "step_size": 1.7e-4, "chains": 2, "bank_size": 8, "check_every": 200},
        "distill": {"target_mode": "running_mean", "every": 2, "lr": 3e-3},
        "student": {"family": "cnn", "m1": 0.5, "m2": 0.5},
    })
    p = api.prepare(cfg)
    assert p.device.type == "cuda" and p.bundle.train.x.is_cuda
    torch.manual_seed(0)
    model = build(api.student_arch_for(p, cfg.student)).to(p.device)
    teacher = api.sample_teacher(p, (api.make_trainer(model, p, cfg.distill),), progress=False)
    assert teacher.test["predictive"].is_cuda
    assert all(math.isfinite(v) for v in teacher.metrics.values())
    assert teacher.bank[next(iter(teacher.bank))].shape[0] >= 2
    rec = evaluate(model, p.bundle.test.x, p.bundle.test.y, teacher.test)
    assert all(math.isfinite(v) for v in rec.values())
    dc = replace(cfg.distill, target_mode=TargetMode.cached)
    timing = train_student(api.make_trainer(model, p, dc), teacher, p.bundle.transfer, 50, dc, cfg.data)
    assert timing["steps_per_second"] > 0


# --------------------------------------------------------------------------- config and data errors

def test_config_unknown_key_names_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'step_sise' in teacher \(did you mean 'step_size'\? valid keys: .*step_size"):
        study_from_dict({"teacher": {"step_sise": 1e-4}})
    with pytest.raises(ConfigError, match=r"unknown key 'techer' \(did you mean 'teacher'\? valid keys: .*teacher"):
        study_from_dict({"techer": {}})


@pytest.mark.parametrize("data, message", [
    ({"teacher": {"step_size": -1.0}}, "teacher.step_size must be > 0"),
    ({"teacher": {"iterations": 100, "burn_in": 100}}, r"teacher.burn_in must be in \[0, iterations\)"),
    ({"student": {"dropout": 1.5}}, r"student.dropout must be in \[0, 1\)"),
    ({"data": {"mask_size": -2}}, "data.mask_size must be >= 0"),
    ({"teacher": {"iterations": "many"}}, "teacher.iterations must be an integer, got 'many'"),
    ({"teacher": {"arch": "resnet"}}, r"teacher.arch must be one of \['mlp', 'cnn', 'cifar_cnn'\]"),
    ({"distill": {"targets": ["expected_entropy"]}}, "must start with 'predictive'"),
], ids=["step_size", "burn_in", "dropout", "mask_size", "not_int", "enum", "targets"])
def test_config_bad_values(data, message):
    with pytest.raises(ConfigError, match=message):
        study_from_dict(data)


def test_config_overrides(tmp_path):
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        parse_overrides(["teacher.step_size"])
    with pytest.raises(ConfigError, match="conflicts with another override"):
        parse_overrides(["teacher=1", "teacher.iterations=2"])
    path = tmp_path / "study.yaml"
    path.write_text("name: s\nteacher:\n  iterations: 500\n  burn_in: 100\n")
    assert load_study(path, ["teacher.iterations=123", "data.mask_size=4"]).teacher.iterations == 123
    # a bad override is blamed on the override, not on the (valid) study file
    with pytest.raises(ConfigError, match=r"^--set teacher.iterations=abc: teacher.iterations must be an integer, got 'abc'"):
        load_study(path, ["teacher.iterations=abc"])
    with pytest.raises(ConfigError, match=r"^--set teacher.iters=5: unknown key 'iters' in teacher \(did you mean 'iterations'\?"):
        load_study(path, ["teacher.iters=5"])
    with pytest.raises(ConfigError, match="study file not found"):
        load_study(tmp_path / "missing.yaml")


def test_missing_mnist_root_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("GPED_CACHE", str(tmp_path / "cache"))
    env_root = tmp_path / "from_env"
    monkeypatch.setenv("GPED_DATA_ROOT", str(env_root))
    cfg_root = tmp_path / "from_config"
    cfg = study_from_dict({"data": {"dataset": "mnist", "root": str(cfg_root)}})
    with pytest.raises(DataError) as err:  # data.root wins over the environment
        api.prepare(cfg, device="cpu")
    msg = str(err.value)
    assert str(cfg_root / "MNIST" / "raw") in msg and "GPED_DATA_ROOT" in msg and "data.root" in msg
    # Without data.root the environment variable is where it looks.
    with pytest.raises(DataError, match=str(env_root / "MNIST" / "raw")):
        make_bundle(DataConfig(dataset=Dataset.mnist), seed=0)
    assert not any((tmp_path / "cache").rglob("*ubyte*"))  # nothing was half-copied


# --------------------------------------------------------------------------- divergence

def test_diverging_sampler_raises():
    cfg = study_from_dict({
        "name": "t", "device": "cpu", "data": {"dataset": "digits"},
        "teacher": {"widths": [16], "iterations": 200, "burn_in": 10, "thin": 10, "step_size": 1e3,
                    "check_every": 20},
    })
    p = api.prepare(cfg)
    with pytest.raises(DivergenceError, match=r"SGLD diverged \(NaN/inf parameters\) by iteration 20; "
                                              r"lower teacher.step_size"):
        api.sample_teacher(p, progress=False)
    assert issubclass(DivergenceError, FloatingPointError)

    s = _sampler(step_size=1e3)
    for _ in range(20):
        s.step()
    assert not s.is_finite()


def test_diverging_student_raises():
    """A student fed non-finite targets stops at the next check with a message naming the fix."""
    x, y = _toy(40)
    teacher = TeacherResult(TOY_ARCH, test={}, ood=None,
                            transfer={"predictive": torch.full((40, 3), float("nan"))}, bank={}, metrics={})
    cfg = study_from_dict({"distill": {"target_mode": "cached", "targets": ["predictive"], "transfer_batch": 8}})
    model = build(student_arch("mlp", (1, 4, 4), 3, (("predictive", 0),), widths=(5,)))
    trainer = StudentTrainer(model, resolve(["predictive"]), cfg.distill)
    with pytest.raises(DivergenceError, match=r"student diverged \(NaN/inf loss\) by step 10; lower distill.lr"):
        train_student(trainer, teacher, x, 50, cfg.distill, cfg.data, check_every=10)


def test_run_teacher_fewer_iterations_than_thin():
    """Post-burn-in shorter than `thin`: the final sample is used instead of failing."""
    x, y = _toy(80)
    cfg = study_from_dict({"teacher": {"widths": [8], "iterations": 30, "burn_in": 25, "thin": 100,
                                       "step_size": 1e-3}})
    from gped_search.data import DataBundle, Split

    bundle = DataBundle("toy", Split(x, y), x, Split(x[:20], y[:20]), 3)
    res = run_teacher(cfg.teacher, cfg.distill, cfg.data, bundle, TOY_ARCH, resolve(["predictive"]),
                      progress=False)
    assert res.stats["test_samples"] == 1
    torch.testing.assert_close(res.test["predictive"].sum(1), torch.ones(20))
