"""Tests for gped_search.report.tables: Pareto masks/fronts, hypervolume, knee point."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gped_search.report.tables import (
    direction_signs,
    eligible_mask,
    hypervolume,
    hypervolume_history,
    knee_point,
    pareto_front,
    pareto_mask,
    reference_point,
)

NAN = float("nan")


# ----------------------------------------------------------------------------- oracles
def brute_pareto(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """O(n^2) definition: not dominated by any other NaN-free row."""
    sign = [1 if d.startswith("min") else -1 for d in directions]
    rows = [
        None if any(math.isnan(v) for v in r) else [s * v for s, v in zip(sign, r)] for r in values
    ]
    out = []
    for i, a in enumerate(rows):
        if a is None:
            out.append(False)
            continue
        dominated = False
        for j, b in enumerate(rows):
            if j == i or b is None:
                continue
            if all(bb <= aa for aa, bb in zip(a, b)) and any(bb < aa for aa, bb in zip(a, b)):
                dominated = True
                break
        out.append(not dominated)
    return np.array(out, dtype=bool)


def grid_hypervolume(points: np.ndarray, ref: int) -> int:
    """Exact volume for integer points, minimisation, ref = (ref,)*k: count unit cells.

    The cell with lower corner c (0 <= c < ref) is dominated iff some point p <= c.
    """
    k = points.shape[1] if points.size else 1
    count = 0
    for c in itertools.product(range(ref), repeat=k):
        if points.size and (points <= np.array(c)).all(axis=1).any():
            count += 1
    return count


def random_directions(draw, k):
    return [draw(st.sampled_from(["minimize", "maximize"])) for _ in range(k)]


# --------------------------------------------------------------------------- pareto mask
@st.composite
def value_arrays(draw, with_nan=True):
    k = draw(st.integers(1, 3))
    n = draw(st.integers(0, 14))
    cells = st.sampled_from([0.0, 1.0, 2.0, 3.0, NAN]) if with_nan else st.integers(0, 3).map(float)
    vals = np.array([[draw(cells) for _ in range(k)] for _ in range(n)], dtype=float).reshape(n, k)
    return vals, random_directions(draw, k)


@given(value_arrays())
@settings(max_examples=300, deadline=None)
def test_pareto_mask_matches_bruteforce(case):
    vals, dirs = case
    np.testing.assert_array_equal(pareto_mask(vals, dirs), brute_pareto(vals, dirs))


@given(value_arrays(with_nan=False))
@settings(max_examples=100, deadline=None)
def test_pareto_mask_invariants(case):
    vals, dirs = case
    mask = pareto_mask(vals, dirs)
    if len(vals):
        assert mask.any()  # a finite non-empty set always has a non-dominated element
    # duplicates share their fate
    for i, j in itertools.combinations(range(len(vals)), 2):
        if (vals[i] == vals[j]).all():
            assert mask[i] == mask[j]


def test_pareto_mask_hand_cases():
    assert pareto_mask(np.empty((0, 2)), ["min", "min"]).shape == (0,)
    assert pareto_mask(np.array([[3.0, 4.0]]), ["min", "max"]).tolist() == [True]
    assert pareto_mask(np.ones((4, 2)), ["min", "min"]).tolist() == [True] * 4
    assert pareto_mask(np.array([[NAN, 0.0], [5.0, 5.0]]), ["min", "min"]).tolist() == [False, True]
    assert pareto_mask(np.array([[NAN, NAN]]), ["min", "min"]).tolist() == [False]
    vals = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 2]], dtype=float)
    assert pareto_mask(vals, ["min", "min"]).tolist() == [True, True, True, False, True]
    assert pareto_mask(vals, ["max", "max"]).tolist() == [True, False, True, True, False]
    df = pd.DataFrame(vals, columns=["a", "b"])
    assert pareto_mask(df, ["minimize", "minimize"]).tolist() == [True, True, True, False, True]


def test_direction_parsing():
    optuna = pytest.importorskip("optuna")
    signs = direction_signs(["MIN", "maximize", optuna.study.StudyDirection.MAXIMIZE])
    assert signs.tolist() == [1.0, -1.0, -1.0]
    with pytest.raises(ValueError):
        direction_signs(["sideways"])


# -------------------------------------------------------------------------- pareto front
def trials_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "number": range(8),
            "state": [
                "COMPLETE",
                "FAIL",
                "PRUNED",
                "RUNNING",
                "COMPLETE",
                "COMPLETE",
                "COMPLETE",
                "COMPLETE",
            ],
            "feasible": [True, True, True, True, False, True, True, None],
            "kl": [0.5, 0.0, 0.0, 0.0, 0.0, 0.2, 0.9, 0.1],
            "bytes_fp32": [100.0, 1.0, 1.0, 1.0, 1.0, 300.0, 50.0, 900.0],
            "family": list("abababab"),
        }
    )


def test_pareto_front_excludes_non_complete_and_infeasible():
    df = trials_frame()
    front = pareto_front(df, {"kl": "minimize", "bytes_fp32": "minimize"})
    # rows 1-3 (not COMPLETE) and 4 (infeasible) would dominate everything otherwise;
    # row 7 has feasible=None, which counts as feasible
    assert front["number"].tolist() == [7, 5, 0, 6]  # sorted by kl, best first
    assert list(front.columns) == list(df.columns)
    assert front.index.tolist() == [7, 5, 0, 6]


def test_pareto_front_sort_maximise_first_objective_and_trialstate_enum():
    optuna = pytest.importorskip("optuna")
    df = trials_frame()
    df["state"] = [optuna.trial.TrialState.COMPLETE] * 4 + ["TrialState.COMPLETE"] * 4
    front = pareto_front(df, {"kl": "maximize", "bytes_fp32": "minimize"}, feasible_col=None)
    assert front["kl"].tolist() == sorted(front["kl"], reverse=True)
    assert 6 in front["number"].tolist()


def test_pareto_front_empty_cases():
    df = trials_frame()
    empty = pareto_front(df.iloc[:0], {"kl": "minimize"})
    assert empty.empty and list(empty.columns) == list(df.columns)
    none_ok = df.assign(state="FAIL")
    assert pareto_front(none_ok, {"kl": "minimize", "bytes_fp32": "minimize"}).empty
    all_bad = df.assign(feasible=False)
    assert pareto_front(all_bad, {"kl": "minimize"}).empty
    with pytest.raises(KeyError):
        pareto_front(df, {"nope": "minimize"})


def test_pareto_front_without_state_or_feasible_columns():
    df = pd.DataFrame({"a": [1.0, 2.0, NAN], "b": [2.0, 1.0, 0.0]})
    assert pareto_front(df, {"a": "min", "b": "min"}).index.tolist() == [0, 1]
    assert eligible_mask(df).all()


# ---------------------------------------------------------------------------- hypervolume
def test_hypervolume_hand_2d():
    assert hypervolume(np.array([[1.0, 1.0]]), [2.0, 2.0], ["min", "min"]) == pytest.approx(1.0)
    stair = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(stair, [4.0, 4.0], ["min", "min"]) == pytest.approx(6.0)
    # duplicates and dominated points change nothing
    more = np.vstack([stair, stair, [[3.5, 3.5]]])
    assert hypervolume(more, [4.0, 4.0], ["min", "min"]) == pytest.approx(6.0)
    assert hypervolume(np.empty((0, 2)), [1.0, 1.0], ["min", "min"]) == 0.0


def test_hypervolume_hand_3d():
    assert hypervolume(np.zeros((1, 3)), np.ones(3), ["min"] * 3) == pytest.approx(1.0)
    two = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    # 2*2*1 + 1*1*2 - overlap 1*1*1
    assert hypervolume(two, [2.0, 2.0, 2.0], ["min"] * 3) == pytest.approx(5.0)
    corners = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=float)
    # of the 8 unit cells of the 2-cube, those with at most one zero coordinate: 3 + 1
    assert hypervolume(corners, [2.0, 2.0, 2.0], ["min"] * 3) == pytest.approx(4.0)


def test_hypervolume_maximise_and_outside_ref():
    assert hypervolume(np.array([[3.0, 3.0]]), [0.0, 0.0], ["max", "max"]) == pytest.approx(9.0)
    # mixed: maximise accuracy (ref 0.5), minimise bytes (ref 10)
    assert hypervolume(np.array([[0.9, 2.0]]), [0.5, 10.0], ["max", "min"]) == pytest.approx(3.2)
    pts = np.array([[5.0, 0.0], [4.0, 1.0], [1.0, 1.0], [NAN, 0.0]])
    # (5, 0) lies beyond the ref in x, (4, 1) touches it: neither contributes
    assert hypervolume(pts, [4.0, 4.0], ["min", "min"]) == pytest.approx(9.0)
    assert hypervolume(np.array([[5.0, -1.0]]), [4.0, 4.0], ["min", "min"]) == 0.0


def test_hypervolume_bad_ref():
    with pytest.raises(ValueError):
        hypervolume(np.ones((1, 2)), [1.0], ["min", "min"])
    with pytest.raises(ValueError):
        hypervolume(np.ones((1, 2)), [1.0, NAN], ["min", "min"])


@st.composite
def integer_sets(draw, k):
    n = draw(st.integers(0, 9))
    pts = np.array([[draw(st.integers(0, 6)) for _ in range(k)] for _ in range(n)], dtype=float)
    return pts.reshape(n, k), random_directions(draw, k)


@pytest.mark.parametrize("k", [2, 3, 4])
@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_hypervolume_matches_grid_count(k, data):
    pts, dirs = data.draw(integer_sets(k))
    ref = 5  # points with a coordinate of 5 or 6 lie on/beyond the ref and must not count
    expected = grid_hypervolume(pts, ref)
    sign = np.array([1.0 if d == "minimize" else -1.0 for d in dirs])
    got = hypervolume(pts * sign, np.full(k, float(ref)) * sign, dirs)
    assert got == pytest.approx(expected)


def test_hypervolume_3d_monte_carlo():
    rng = np.random.default_rng(0)
    pts = rng.random((25, 3))
    ref = np.array([1.0, 1.2, 1.1])
    samples = rng.random((200_000, 3)) * ref
    hit = np.zeros(len(samples), dtype=bool)
    for p in pts:
        hit |= (samples >= p).all(axis=1)
    box = float(np.prod(ref))
    est, se = hit.mean() * box, hit.std() * box / math.sqrt(len(samples))
    assert hypervolume(pts, ref, ["min"] * 3) == pytest.approx(est, abs=5 * se)


# ---------------------------------------------------------------- reference point, history
def test_reference_point_default_margin():
    df = trials_frame()
    ref = reference_point(df, {"kl": "minimize", "bytes_fp32": "minimize"})
    # eligible rows: 0, 5, 6, 7 -> kl in [0.1, 0.9], bytes in [50, 900]
    np.testing.assert_allclose(ref, [0.9 + 0.08, 900 + 85.0])
    acc = pd.DataFrame({"acc": [0.8, 0.9], "state": "COMPLETE"})
    np.testing.assert_allclose(reference_point(acc, {"acc": "maximize"}, margin=0.5), [0.75])
    flat = pd.DataFrame({"acc": [0.8, 0.8], "z": [0.0, 0.0]})
    np.testing.assert_allclose(reference_point(flat, {"acc": "max", "z": "min"}), [0.72, 0.1])
    with pytest.raises(ValueError):
        reference_point(df.assign(state="FAIL"), {"kl": "minimize"})


@st.composite
def trial_tables(draw):
    n = draw(st.integers(1, 25))
    rows = {
        "number": draw(st.permutations(list(range(n)))),
        "state": [
            draw(st.sampled_from(["COMPLETE", "COMPLETE", "PRUNED", "FAIL"])) for _ in range(n)
        ],
        "feasible": [draw(st.booleans()) for _ in range(n)],
        "a": [draw(st.floats(0, 10)) for _ in range(n)],
        "b": [draw(st.floats(0, 10)) for _ in range(n)],
        "c": [draw(st.floats(0, 1)) for _ in range(n)],
    }
    return pd.DataFrame(rows)


@given(trial_tables(), st.sampled_from([2, 3]))
@settings(max_examples=60, deadline=None)
def test_hypervolume_history_non_decreasing_and_final(df, k):
    objectives = dict(list({"a": "minimize", "b": "minimize", "c": "maximize"}.items())[:k])
    ref = [11.0, 11.0, -0.5][:k]
    hist = hypervolume_history(df, objectives, ref)
    assert list(hist.columns) == ["trial", "hypervolume"]
    assert hist["trial"].tolist() == sorted(df["number"])
    assert (np.diff(hist["hypervolume"].to_numpy()) >= -1e-12).all()
    ok = df[(df["state"] == "COMPLETE") & df["feasible"]]
    final = hypervolume(ok[list(objectives)].to_numpy(), ref, list(objectives.values()))
    assert hist["hypervolume"].iloc[-1] == pytest.approx(final)


def test_hypervolume_history_hand_and_defaults():
    df = pd.DataFrame(
        {"number": [2, 0, 1], "state": "COMPLETE", "x": [1.0, 3.0, 2.0], "y": [3.0, 1.0, 2.0]}
    )
    hist = hypervolume_history(df, {"x": "min", "y": "min"}, {"x": 4.0, "y": 4.0})
    assert hist["trial"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(hist["hypervolume"], [3.0, 5.0, 6.0])
    assert hypervolume_history(df, {"x": "min", "y": "min"})["hypervolume"].iloc[-1] > 0
    empty = hypervolume_history(df.iloc[:0], {"x": "min", "y": "min"})
    assert empty.empty and list(empty.columns) == ["trial", "hypervolume"]
    failed = hypervolume_history(df.assign(state="FAIL"), {"x": "min", "y": "min"})
    assert (failed["hypervolume"] == 0).all()


# ------------------------------------------------------------------------------ knee point
def test_knee_point_picks_corner():
    front = pd.DataFrame({"kl": [0.0, 0.1, 1.0], "bytes": [100.0, 5.0, 0.0]}, index=[10, 11, 12])
    assert knee_point(front, {"kl": "minimize", "bytes": "minimize"}) == 11
    flipped = pd.DataFrame(
        {"acc": [0.5, 0.98, 1.0], "bytes": [0.0, 5.0, 100.0]}, index=["a", "b", "c"]
    )
    assert knee_point(flipped, {"acc": "maximize", "bytes": "minimize"}) == "b"
    with pytest.raises(ValueError):
        knee_point(front.iloc[:0], {"kl": "minimize", "bytes": "minimize"})


def test_latency_inside_its_spread_is_a_tie():
    """Issue 14: a trial whose latency is better only inside the measurement spread is not kept for it."""
    import pandas as pd

    from gped_search.report.tables import pareto_front

    df = pd.DataFrame({"number": [0, 1, 2], "state": "COMPLETE", "kl": [1.0, 2.0, 3.0],
                       "latency_ms": [1.0, 0.95, 0.5], "latency_p10_ms": [0.9, 0.9, 0.45],
                       "latency_p90_ms": [1.1, 1.0, 0.55]})
    objs = {"kl": "minimize", "latency_ms": "minimize"}
    assert set(pareto_front(df, objs)["number"]) == {0, 2}  # 1 ties 0 on latency and is worse on kl
    assert set(pareto_front(df, objs, spread=False)["number"]) == {0, 1, 2}
    assert set(pareto_front(df.drop(columns=["latency_p10_ms"]), objs)["number"]) == {0, 1, 2}


def test_status_front_size_matches_the_frame_without_pandas():
    """``study_status`` counts the front from plain rows (no pandas); it must agree with
    ``trials_frame``'s ``on_front``, latency spread ties and infeasible trials included."""
    import optuna

    from gped_search.search.results import study_status, trials_frame

    rng = np.random.default_rng(0)
    study = optuna.create_study(directions=["minimize", "minimize", "minimize"])
    study.set_user_attr("objectives", ["kl", "bytes_fp32", "latency_ms"])
    for i in range(40):
        kl, size, lat = rng.uniform(0, 1), float(rng.integers(1, 6)), rng.uniform(1, 2)
        study.add_trial(
            optuna.trial.create_trial(
                values=[kl, size, lat],
                user_attrs={"latency_p10_ms": lat - 0.2, "latency_p90_ms": lat + 0.2},
                system_attrs={"constraints": [1.0 if i % 7 == 0 else -1.0]},
            )
        )
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    df = trials_frame(study)
    st = study_status(study)
    assert st["front_size"] == int(df["on_front"].sum()) > 0
    assert st["trials"] == {"COMPLETE": 40, "FAIL": 1}
