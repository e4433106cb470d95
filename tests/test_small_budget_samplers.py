"""Samplers for small budgets (issue 25 item 2): scrambled-Sobol QMC, GP, TPE's start-up trials, and
lambda_g as a log-scale float behind a separate on/off switch."""

from __future__ import annotations

import warnings

import optuna
import pytest

from gped_search.config import ConfigError, load_study
from gped_search.search.samplers import make_sampler
from gped_search.search.space import parse_space, suggest

Q = "studies/quickstart.yaml"
SPACE = [
    "search.space.lambda_g={low: 1.0e-5, high: 1.0e-1, log: true}",
    "search.space.prune_on=[true, false]",
]


def _study(sampler: str, n: int, extra=()):
    cfg = load_study(Q, [f"search.sampler={sampler}", f"search.n_trials={n}", *SPACE, *extra])
    specs = parse_space(cfg.search.space)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=make_sampler(cfg, specs))
    choices = []

    def objective(trial):
        c = suggest(trial, cfg, specs)
        choices.append((trial.params, c.cfg.prune.lambda_g))
        w = sum(c.cfg.student.widths) if c.cfg.student.family.value == "mlp" else 100 * c.cfg.student.m1
        return 1.0 / (1 + w) + c.cfg.prune.lambda_g, w * (1 - 0.5 * (c.cfg.prune.lambda_g > 0))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=n)
    return cfg, study, choices


@pytest.mark.parametrize("sampler", ["qmc", "gp", "tpe"])
def test_small_budget_samplers_run_a_study_and_prune_on_gates_lambda(sampler):
    cfg, study, choices = _study(sampler, 12)
    assert len(study.trials) == 12 and all(t.state.name == "COMPLETE" for t in study.trials)
    seen = {on for params, _ in choices for on in [params["prune_on"]]}
    assert seen == {True, False}  # both arms visited in 12 trials
    for params, lam in choices:
        if params["prune_on"]:
            assert "lambda_g" in params and 1e-5 <= lam <= 1e-1 and lam == params["lambda_g"]
        else:
            assert "lambda_g" not in params and lam == 0.0  # not sampled, so models see no fake value


def test_sampler_types_and_startup_trials():
    cfg = load_study(Q, ["search.sampler=qmc"])
    assert isinstance(make_sampler(cfg, parse_space(cfg.search.space)), optuna.samplers.QMCSampler)
    cfg = load_study(Q, ["search.sampler=gp", "search.n_startup_trials=3"])
    s = make_sampler(cfg, parse_space(cfg.search.space))
    assert isinstance(s, optuna.samplers.GPSampler) and s._n_startup_trials == 3
    cfg = load_study(Q, ["search.n_startup_trials=4"])
    assert make_sampler(cfg, parse_space(cfg.search.space))._n_startup_trials == 4
    with pytest.raises(ConfigError, match="search.n_startup_trials"):
        load_study(Q, ["search.n_startup_trials=0"])
    with pytest.raises(ConfigError, match="search.sampler"):
        load_study(Q, ["search.sampler=cmaes"])
    with pytest.raises(ConfigError, match="search.space.prune_on"):
        load_study(Q, ["search.space.prune_on=[yes, 3]"])


def test_qmc_is_reproducible_with_the_seed():
    a = [p for p, _ in _study("qmc", 6)[2]]
    b = [p for p, _ in _study("qmc", 6)[2]]
    assert a == b
