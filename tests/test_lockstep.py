"""Lockstep students (the search's batch mode): K students trained together must end exactly where
each would have ended alone on the same minibatch stream, a diverging student must fail alone, and
``train_trials`` must give each trial its own record.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import tiny_engine

from gped_search import engine as api
from gped_search.config import StudentFamily, TargetMode
from gped_search.distill.loop import train_student, train_students
from gped_search.distill.student import LockstepTrainer
from gped_search.models import build
from gped_search.posterior.sgld import DivergenceError

QUICKSTART = str(Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml")


@pytest.fixture(scope="module")
def setup():
    yield from tiny_engine("distill.steps=60", "prune.finetune_steps=20")


def _students(cfg, p, seed=5, lambda_g=1e-3):
    """Three different students (MLP widths/depths, a CNN) at two learning rates."""
    choices = [(replace(cfg.student, widths=(32,)), 3e-3),
               (replace(cfg.student, widths=(24, 12)), 1e-3),
               (replace(cfg.student, family=StudentFamily.cnn, m1=0.5, m2=0.5), 3e-3)]
    out = []
    for s, lr in choices:
        torch.manual_seed(seed)
        model = build(api.student_arch_for(p, s))
        out.append((model, api.make_trainer(model, p, replace(cfg.distill, lr=lr), lambda_g=lambda_g)))
    return out


@pytest.mark.parametrize("mode", ["cached", "online"])
def test_lockstep_equals_one_at_a_time(setup, mode):
    """One backward through the sum of losses and one Adam over all students = K separate runs."""
    cfg, p, teacher = setup
    dcfg = replace(cfg.distill, target_mode=TargetMode(mode))
    alone = _students(cfg, p)
    for _, tr in alone:
        train_student(tr, teacher, p.bundle.transfer, 40, dcfg, cfg.data, seed=9)
    together = _students(cfg, p)
    res = train_students([tr for _, tr in together], teacher, p.bundle.transfer, 40, dcfg, cfg.data, seed=9)
    assert res["diverged"] == {} and res["students"] == 3
    for (a, ta), (b, tb) in zip(alone, together):
        assert ta.steps == tb.steps == 40
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7, msg=name)
        torch.testing.assert_close(ta.last_loss, tb.last_loss)


def test_a_diverging_student_fails_alone(setup):
    cfg, p, teacher = setup
    students = _students(cfg, p, lambda_g=0.0)
    students[1][1].opt.param_groups[0]["lr"] = 1e12  # its own group in the joint optimiser
    ref = _students(cfg, p, lambda_g=0.0)
    res = train_students([tr for _, tr in students], teacher, p.bundle.transfer, 30, cfg.distill, cfg.data,
                         seed=3, check_every=10)
    assert res["diverged"] == {1: 10}
    assert students[1][1].diverged() and not students[0][1].diverged() and not students[2][1].diverged()
    # the others trained as if alone (the NaNs never reached them)
    for i in (0, 2):
        train_student(ref[i][1], teacher, p.bundle.transfer, 30, cfg.distill, cfg.data, seed=3, check_every=10)
        for x, y in zip(students[i][0].parameters(), ref[i][0].parameters()):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
            assert torch.isfinite(x).all()


def test_lockstep_needs_a_student():
    with pytest.raises(ValueError, match="at least one student"):
        LockstepTrainer([])


def test_train_trials_gives_each_trial_its_record(setup):
    cfg, p, teacher = setup
    configs = [replace(cfg, student=replace(cfg.student, widths=(16,)), prune=replace(cfg.prune, lambda_g=0.0)),
               replace(cfg, student=replace(cfg.student, widths=(32, 8)), prune=replace(cfg.prune, lambda_g=0.05)),
               replace(cfg, distill=replace(cfg.distill, lr=1e12))]
    out = api.train_trials(p, teacher, configs, [11, 12, 13])
    (_, r0), (m1, r1), failed = out[0], out[1], out[2]
    assert isinstance(failed, api.StudentFailure) and failed.config is configs[2]
    assert isinstance(failed.error, DivergenceError) and "lower distill.lr" in str(failed.error)
    assert r0["params"] != r1["params"] and r0["batch_students"] == r1["batch_students"] == 3
    assert out[0].pruning is None and out[1].pruning["rule"] == "threshold"
    assert r1["params"] == sum(t.numel() for t in m1.parameters())
    for r in (r0, r1):
        assert r["kl"] >= 0 and r["train_seconds"] > 0 and r["student_steps"] == 60
    # the same initial weights as train_trial from the same seed: a lockstep of one is train_trial
    torch.manual_seed(0)
    model, rec = api.train_trial(replace(p, cfg=configs[0]), teacher, configs[0].student, configs[0].prune, seed=11)
    (m, r), = api.train_trials(p, teacher, configs[:1], [11])
    for x, y in zip(model.parameters(), m.parameters()):
        torch.testing.assert_close(x, y)
    assert r["kl"] == pytest.approx(rec["kl"], rel=1e-6)


def test_a_batch_trial_is_reproduced_from_its_recorded_seeds(setup):
    """Issue 14: batch-mode trials share the first trial's minibatch stream; each records it as data_seed."""
    cfg, p, teacher = setup
    configs = [replace(cfg, student=replace(cfg.student, widths=(16,)), prune=replace(cfg.prune, lambda_g=0.0)),
               replace(cfg, student=replace(cfg.student, widths=(24,)), prune=replace(cfg.prune, lambda_g=0.0))]
    (_, r0), (m1, r1) = api.train_trials(p, teacher, configs, [21, 22])
    assert r0["data_seed"] == r1["data_seed"] == 21
    model, rec = api.train_trial(replace(p, cfg=configs[1]), teacher, configs[1].student, configs[1].prune, seed=22,
                                 data_seed=r1["data_seed"])
    for x, y in zip(model.parameters(), m1.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    assert rec["kl"] == pytest.approx(r1["kl"], rel=1e-5)
    _, alone = api.train_trial(replace(p, cfg=configs[1]), teacher, configs[1].student, configs[1].prune, seed=22)
    assert alone["data_seed"] == 22 and alone["kl"] != pytest.approx(r1["kl"], rel=1e-9)  # the seed alone differs


def test_make_trainer_takes_a_penalty_strength_or_a_prune_config_not_both(setup):
    cfg, p, _ = setup
    model = build(api.student_arch_for(p, cfg.student))
    with pytest.raises(ValueError, match="pass lambda_g or prune, not both"):
        api.make_trainer(model, p, cfg.distill, lambda_g=0.1, prune=cfg.prune)
    assert api.make_trainer(model, p, cfg.distill, prune=cfg.prune).penalty_weight == cfg.prune.lambda_g
