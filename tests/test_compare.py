"""``gped-search compare``: grid vs pruning vs search over seeds, from the studies' storages.

Pure parts against brute force (busy seconds as a union of intervals, the hypervolume curve against
a recount over the trials so far); the command end to end on tiny quickstart studies.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gped_search.cli import main
from gped_search.report.compare import (
    HV_OBJECTIVES,
    StudyRun,
    busy_seconds,
    hv_curves,
    hv_summary,
    method_label,
    size_needed,
)
from gped_search.report.tables import hypervolume

QUICKSTART = str(Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml")
TINY = ("teacher.iterations=600", "teacher.burn_in=200", "teacher.thin=20", "teacher.bank_size=4",
        "distill.steps=60", "prune.finetune_steps=20")


def test_method_label_from_the_study_settings():
    grid = {"search": {"sampler": "grid", "space": {"mlp_depth": [1, 2], "mlp_width": {"values": [8, 16]},
                                                    "lambda_g": 0.0}}}
    prune = {"search": {"sampler": "grid", "space": {"mlp_depth": 2, "mlp_width": {"values": [400], "shared": True},
                                                     "lambda_g": [0.0, 1e-3]}}}
    assert method_label(grid) == "grid"
    assert method_label(prune) == "prune"
    assert method_label({"search": {"sampler": "tpe"}}) == "tpe"
    assert method_label({"search": {"sampler": "nsga2", "space": {"lambda_g": [0, 1]}}}) == "nsga2"
    one = {"search": {"strategy": "halving", "n_trials": 42, "halving": {"n": None}}}
    assert method_label(one) == "halving"
    brackets = {"search": {"strategy": "halving", "n_trials": 42, "halving": {"n": 14}}}
    assert method_label(brackets) == "halving-b14"
    assert method_label({"search": {**brackets["search"], "sampler": "qmc"}}) == "halving-b14-qmc"
    assert method_label({"search": {**brackets["search"], "n_trials": 14}}) == "halving"  # one bracket after all
    from gped_search.report.compare_plots import method_color, method_name, method_names

    assert method_name("halving-b14") == "successive halving, brackets of 14"
    assert method_names(["halving-b14", "tpe", "halving", "grid"]) == ["grid", "tpe", "halving", "halving-b14"]
    assert method_color("halving-b14") != method_color("halving")


def _frame(spans, kls, sizes):
    t0 = pd.Timestamp("2026-01-01")
    return pd.DataFrame({"number": range(len(spans)), "state": "COMPLETE", "feasible": True,
                         "datetime_start": [t0 + pd.Timedelta(seconds=a) for a, _ in spans],
                         "datetime_complete": [t0 + pd.Timedelta(seconds=b) for _, b in spans],
                         "kl": kls, "bytes_fp32": sizes})


def test_busy_seconds_is_the_union_of_the_finished_trials_intervals():
    rng = np.random.default_rng(0)
    spans = []
    for _ in range(12):
        a = float(rng.uniform(0, 50))
        spans.append((a, a + float(rng.uniform(0.5, 10))))
    got = busy_seconds(_frame(spans, [0.1] * 12, [100] * 12))
    for i in range(12):  # brute force: count covered 1 ms cells
        grid = np.zeros(70_000, dtype=bool)
        for a, b in spans[: i + 1]:
            grid[int(round(a * 1000)):int(round(b * 1000))] = True
        assert got[i] == pytest.approx(grid.sum() / 1000, abs=0.01)
    # a lockstep batch: 3 trials over the same 10 s count 10 s, not 30
    assert busy_seconds(_frame([(0, 10)] * 3 + [(10, 15)], [0.1] * 4, [1] * 4))[-1] == pytest.approx(15)


def test_hv_curves_recount_the_front_of_the_trials_so_far_at_a_shared_reference():
    rng = np.random.default_rng(1)
    runs = []
    for seed, method in itertools.product((0, 1), ("grid", "tpe")):
        n = 7
        df = _frame([(i, i + 1) for i in range(n)], rng.uniform(0.01, 0.3, n), 10 ** rng.uniform(3, 6, n))
        cfg = {"seed": 0, "search": {"seed": seed, "sampler": "tpe" if method == "tpe" else "grid",
                                     "space": {"mlp_width": {"values": [1, 2]}}}}
        runs.append(StudyRun(f"{method}{seed}", cfg, df))
    curves = hv_curves(runs)
    pool = pd.concat([r.trials for r in runs])
    lb = np.log10(pool["bytes_fp32"])
    grid_kl = pd.concat([r.trials for r in runs if r.method == "grid"])["kl"]
    ref = np.array([1.1 * grid_kl.max(), lb.max() + 0.1 * (lb.max() - lb.min())])  # KL: 1.1 x the grid's worst
    for r in runs:
        c = curves[curves["study"] == r.name].sort_values("trials")
        assert (np.diff(c["hypervolume"]) >= 0).all()
        for k in range(1, 8):
            t = r.trials.head(k)
            pts = np.c_[t["kl"], np.log10(t["bytes_fp32"])]
            assert c["hypervolume"].iloc[k - 1] == pytest.approx(hypervolume(pts, ref, ["min", "min"]))
    s = hv_summary(curves, [7, 99])
    assert list(s["method"]) == ["grid", "tpe"] and set(s["trials"]) == {7} and set(s["seeds"]) == {2}
    g = curves[(curves["method"] == "grid") & (curves["trials"] == 7)]["hypervolume"]
    assert s.loc[s["method"] == "grid", "hv_mean"].item() == pytest.approx(g.mean())
    assert s.loc[s["method"] == "grid", "hv_sd"].item() == pytest.approx(g.std(ddof=1))
    assert list(HV_OBJECTIVES) == ["kl", "log10_bytes"]


def test_size_needed_picks_the_smallest_student_within_the_tolerance():
    scaling = pd.DataFrame({"setting": "s", "mask": 0, "depth": 2, "size": [25, 50, 100, 200],
                            "params": [1e3, 2e3, 4e3, 8e3], "kl_mean": [0.3, 0.105, 0.1, 0.096],
                            "expected_entropy_mae_mean": [0.5, 0.4, 0.2, 0.19]})
    kl = size_needed(scaling, "kl").iloc[0]
    ent = size_needed(scaling, "expected_entropy_mae").iloc[0]
    assert kl["smallest_size"] == 50 and ent["smallest_size"] == 100


def test_compare_command_on_tiny_grid_prune_and_search_studies(tmp_path, capsys):
    base = [f"report_dir={tmp_path / 'studies'}", *TINY, "search.batch=1"]
    studies = {
        "g": ["search.sampler=grid", "search.n_trials=2", "search.space={mlp_depth: 1, mlp_width: {values: [6, 24], "
              "shared: true}, lambda_g: 0.0}"],
        "p": ["search.sampler=grid", "search.n_trials=2", "search.space={mlp_depth: 1, mlp_width: {values: [24], "
              "shared: true}, lambda_g: [0.0, 0.01]}"],
        "t0": ["search.sampler=tpe", "search.n_trials=3", "search.seed=0",
               "search.space={mlp_width: {low: 4, high: 32}, lambda_g: [0.0, 0.01]}"],
        "t1": ["search.sampler=tpe", "search.n_trials=3", "search.seed=1",
               "search.space={mlp_width: {low: 4, high: 32}, lambda_g: [0.0, 0.01]}"],
    }
    for name, extra in studies.items():
        args = ["run", QUICKSTART, "--no-report", "--no-progress"]
        for o in [*base, f"name=cmp_{name}", *extra]:
            args += ["--set", o]
        assert main(args) == 0
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "studies"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "MLP students, DIGITS, mask 0px" in printed and "wrote" in printed
    for f in ("comparison.md", "grid_scaling.png", "grid_scaling.csv", "size_needed.csv"):
        assert (out / f).is_file(), f
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["grid_scaling.png", "mlp_students__digits__mask_0px.png", "summary.png"]
    assert "![summary](summary.png)" in (out / "comparison.md").read_text()
    hv = pd.read_csv(next(out.glob("hv_*.csv")))
    assert sorted(hv.groupby("method")["seed"].nunique().items()) == [("grid", 1), ("prune", 1), ("tpe", 2)]
    assert (hv["seconds"] > 0).all()
    fronts = pd.read_csv(next(out.glob("fronts_*.csv")))
    assert {"test_kl", "test_student_acc", "kl", "bytes_fp32"} <= set(fronts.columns)
    md = (out / "comparison.md").read_text()
    assert "search (TPE)" in md and "paper's grid" in md
    # a folder with no study is one clear error
    assert main(["compare", str(tmp_path / "cmp"), "--out", str(tmp_path / "x")]) == 2
    assert "no study.db" in capsys.readouterr().err


def test_best_under_caps_picks_the_lowest_validation_kl_that_fits_and_cuts_longer_runs():
    from gped_search.report.compare import best_under_caps

    df = _frame([(i, i + 1) for i in range(4)], [0.30, 0.10, 0.05, 0.20], [100, 900, 5000, 400])
    df["test_kl"] = df["kl"] + 0.01
    df["test_student_acc"] = 1 - df["kl"]
    run = StudyRun("t", {"search": {"sampler": "tpe", "seed": 0}}, df)
    out = best_under_caps([run], caps=(500, 1000, 10_000), budgets=(2,)).set_index(["trials", "cap"])
    assert out.loc[(4, 500), "val_kl"] == pytest.approx(0.20)  # trial 3 (400 bytes) beats trial 0 (100)
    assert out.loc[(4, 1000), "val_kl"] == pytest.approx(0.10)
    assert out.loc[(4, 10_000), "test_kl"] == pytest.approx(0.06)
    assert out.loc[(2, 500), "val_kl"] == pytest.approx(0.30)  # the first two trials only
    assert (2, 10_000) in out.index and out.loc[(2, 10_000), "val_kl"] == pytest.approx(0.10)
