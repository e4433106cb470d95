"""Successive halving's parts: a bracket trained in pieces ends where one run ends, stopping students leaves
the others bit for bit unchanged, and a bracket run once at full length gives the batch path's records."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import tiny_engine

from gped_search.config import StudentFamily
from gped_search.engine import train_trials
from gped_search.engine.bracket import Bracket
from gped_search.engine.result import StudentResult

TIMING = {"train_seconds", "latency_ms", "latency_p10_ms", "latency_p90_ms"}


@pytest.fixture(scope="module")
def setup():
    yield from tiny_engine("distill.steps=60", "prune.finetune_steps=20")


def _configs(cfg):
    s, pr = cfg.student, cfg.prune
    return [
        replace(cfg, student=replace(s, widths=(32,)), prune=replace(pr, lambda_g=0.0)),
        replace(cfg, student=replace(s, widths=(24, 12)), prune=replace(pr, lambda_g=1e-3)),
        replace(cfg, student=replace(s, family=StudentFamily.cnn, m1=0.5, m2=0.5), prune=replace(pr, lambda_g=0.0)),
    ]


def _weights(model):
    return [t.clone() for t in model.state_dict().values()]


def test_pieces_equal_one_run_and_stopping_others_changes_nobody(setup):
    cfg, p, teacher = setup
    seeds = [3, 4, 5]
    one = Bracket(p, teacher, _configs(cfg), seeds, data_seed=3, total=60)
    one.advance(60)
    pieces = Bracket(p, teacher, _configs(cfg), seeds, data_seed=3, total=60)
    pieces.advance(20)
    pieces.advance(40)
    cut = Bracket(p, teacher, _configs(cfg), seeds, data_seed=3, total=60)
    cut.advance(20)
    cut.stop([1, 2])
    cut.advance(40)
    assert cut.active == [0] and pieces.steps == cut.steps == 60
    for i in range(3):
        for a, b in zip(_weights(one.members[i].model), _weights(pieces.members[i].model)):
            assert torch.equal(a, b)
    for a, b in zip(_weights(one.members[0].model), _weights(cut.members[0].model)):
        assert torch.equal(a, b)  # the survivor is untouched by the others' stopping
    stopped = _weights(cut.members[1].model)
    early = Bracket(p, teacher, _configs(cfg), seeds, data_seed=3, total=60)
    early.advance(20)
    for a, b in zip(stopped, _weights(early.members[1].model)):
        assert torch.equal(a, b)  # a stopped student keeps its weights at the rung
    # the whole run's curve points, plus one at each piece's end (the rung's loss)
    assert set(one.curve(0)) <= set(pieces.curve(0)) and (20, pieces.curve(0)[6][1]) in pieces.curve(0)


def test_a_bracket_at_full_length_gives_the_batch_paths_records(setup):
    cfg, p, teacher = setup
    seeds = [7, 8, 9]
    batch = train_trials(p, teacher, _configs(cfg), seeds, steps=60)
    br = Bracket(p, teacher, _configs(cfg), seeds, data_seed=7, total=60)
    br.advance(60)
    out = br.finish()
    for a, b in zip(batch, out):
        assert isinstance(a, StudentResult) and isinstance(b, StudentResult)
        ra = {k: v for k, v in a.metrics.items() if k not in TIMING | {"batch_students"}}
        rb = {k: v for k, v in b.metrics.items() if k not in TIMING}
        assert ra == rb
        assert a.pruning == b.pruning and a.curve == b.curve


def test_interim_cost_of_a_penalised_student_is_its_size_if_pruned_now(setup):
    cfg, p, teacher = setup
    br = Bracket(p, teacher, _configs(cfg), [1, 2, 3], data_seed=1, total=60)
    br.advance(30)
    plain, pen = br.interim(0), br.interim(1)
    assert plain["params"] == sum(t.numel() for t in br.members[0].model.parameters())
    full = sum(t.numel() for t in br.members[1].model.parameters())
    assert pen["params"] <= full and pen["latency_ms"] == pen["macs"]
    assert 0 < pen["kl"] < 10 and "test_kl" not in pen  # selection split only


# ------------------------------------------------------------------ the rung plan and the samplers


def test_rung_plan_and_bad_input(setup):
    from gped_search.config import load_study
    from gped_search.errors import ConfigError
    from gped_search.search.halving import rung_plan

    q = "studies/quickstart.yaml"
    cfg = load_study(q, ["distill.steps=900", "search.strategy=halving"])
    assert rung_plan(cfg, 27) == [33, 100, 300, 900]  # 27 trials, eta 3: three rungs
    assert rung_plan(cfg, 9) == [100, 300, 900]
    assert rung_plan(cfg, 2) == [300, 900]  # at least one rung
    cfg = load_study(q, ["distill.steps=10", "search.halving.rungs=3", "search.halving.eta=4"])
    with pytest.raises(ConfigError, match="search.halving.rungs: 3 rungs of eta 4 need more student steps"):
        rung_plan(cfg, 64)
    for bad, key in [
        ("search.halving.eta=1", "search.halving.eta"),
        ("search.halving.rungs=0", "search.halving.rungs"),
    ]:
        with pytest.raises(ConfigError, match=key):
            load_study(q, [bad])


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random", "qmc", "gp", "grid"])
def test_every_sampler_survives_stopped_trials_recorded_as_halving_records_them(sampler):
    """PRUNED trials without intermediate values (their curve in a user attribute): every sampler asks on.
    With an intermediate value on a PRUNED trial, multi-objective TPE fails (Optuna 4.9 and 5.0)."""
    import warnings

    import optuna

    from gped_search.config import load_study
    from gped_search.search.samplers import make_sampler
    from gped_search.search.space import parse_space, suggest

    extra = ["search.space={mlp_width: [8, 16, 32], lambda_g: [0, 0.001]}"] if sampler == "grid" else []
    cfg = load_study("studies/quickstart.yaml", [f"search.sampler={sampler}", "search.n_trials=12", *extra])
    specs = parse_space(cfg.search.space)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = optuna.create_study(directions=["minimize", "minimize"], sampler=make_sampler(cfg, specs))
        for k in range(12):
            t = st.ask()
            suggest(t, cfg, specs)
            if k % 3 == 0:
                t.set_user_attr("curve", [[5, 0.3]])
                st.tell(t, state=optuna.trial.TrialState.PRUNED)
            else:
                st.tell(t, [k * 0.1, 1 / (k + 1)])
        assert len(st.get_trials(states=(optuna.trial.TrialState.PRUNED,))) == 4
        if sampler == "tpe":  # the failure this design avoids, kept visible
            t = st.ask()
            suggest(t, cfg, specs)
            st._storage.set_trial_intermediate_value(t._trial_id, 5, 0.3)
            st.tell(t, state=optuna.trial.TrialState.PRUNED)
            with pytest.raises(RuntimeError, match="single direction"):
                suggest(st.ask(), cfg, specs)


def test_a_grid_study_counts_enqueued_retries_as_trials_it_can_still_ask():
    """An interrupted grid point retried (enqueued, WAITING) must still run when every point was visited;
    a killed batch otherwise left a grid study short for good."""
    import optuna

    from gped_search.search.storage import grid_left

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    st = optuna.create_study(sampler=optuna.samplers.GridSampler({"x": [1, 2, 3]}, seed=0))
    a = st.ask()
    a.suggest_categorical("x", [1, 2, 3])
    st.tell(a, state=optuna.trial.TrialState.FAIL)  # an interrupted point: visited, as Optuna's grid says
    assert grid_left(st) == 2
    b = st.ask()
    b.suggest_categorical("x", [1, 2, 3])
    st.tell(b, 1.0)
    assert grid_left(st) == 1
    st.enqueue_trial(a.params)  # its retry
    assert grid_left(st) == 2
    assert grid_left(optuna.create_study()) is None
