"""Hypervolume against compute (report/compute.py) on hand-made curves, and the supernet's seconds counted."""

from __future__ import annotations

import pandas as pd

from gped_search.report.compare import StudyRun, busy_seconds, hv_curves
from gped_search.report.compute import compute_table, hv_at_seconds


def _curve(method, study, secs, hvs):
    return pd.DataFrame({"method": method, "study": study, "seed": 0, "trials": range(1, len(secs) + 1),
                         "seconds": secs, "hypervolume": hvs})


def test_compute_table_by_hand():
    curves = pd.concat([
        _curve("grid", "g0", [30, 60, 90], [0.1, 0.3, 0.5]),
        _curve("grid", "g1", [30, 60, 90], [0.2, 0.4, 0.5]),  # grid: final hv 0.5, 90 s
        _curve("halving", "h0", [10, 20, 45], [0.2, 0.5, 0.6]),  # reaches 0.5 at 20 s
        _curve("halving", "h1", [10, 20, 60], [0.1, 0.2, 0.4]),  # never reaches it
    ])
    t = compute_table(curves).set_index("method")
    assert t.loc["grid", "compute / grid's"] == "1.00" and t.loc["grid", "seeds reaching the grid's final hv"] == "2 of 2"
    assert t.loc["halving", "seeds reaching the grid's final hv"] == "1 of 2"
    assert t.loc["halving", "compute to reach it / grid's"] == f"{20 / 90:.2f}"
    assert t.loc["halving", "compute / grid's"] == f"{52.5 / 90:.2f}"
    # at a third of the grid's compute (30 s): grid seeds 0.1 and 0.2, halving seeds 0.5 and 0.2
    assert t.loc["grid", "hv at 1/3 of the grid's compute"] == "0.1500 (0.0707)"
    assert t.loc["halving", "hv at 1/3 of the grid's compute"] == "0.3500 (0.2121)"
    assert hv_at_seconds(curves[curves["study"] == "h0"], 5) == 0.0
    assert compute_table(curves[curves["method"] != "grid"]).empty


def test_a_supernets_seconds_count_before_its_first_trial():
    t0 = pd.Timestamp("2026-01-01 00:00:00")
    trials = pd.DataFrame({
        "number": [0, 1], "state": ["COMPLETE", "COMPLETE"], "kl": [0.1, 0.2], "bytes_fp32": [2e6, 1e5],
        "datetime_start": [t0, t0 + pd.Timedelta(seconds=10)],
        "datetime_complete": [t0 + pd.Timedelta(seconds=10), t0 + pd.Timedelta(seconds=15)],
    })
    cfg = {"search": {"strategy": "supernet", "sampler": "tpe"}, "student": {"family": "mlp"}}
    plain = hv_curves([StudyRun("a", cfg, trials)])
    with_net = hv_curves([StudyRun("a", cfg, trials, overhead_seconds=100.0)])
    assert list(busy_seconds(trials)) == [10.0, 15.0]
    assert list(with_net["seconds"]) == [110.0, 115.0] and list(plain["seconds"]) == [10.0, 15.0]
    assert set(with_net["method"]) == {"supernet"}
    assert busy_seconds(trials.iloc[:0]).size == 0


def test_runs_written_as_files_read_back_to_the_same_curves(tmp_path):
    from gped_search.report.run_files import is_runs_folder, read_runs, write_runs

    t0 = pd.Timestamp("2026-01-01 00:00:00")
    trials = pd.DataFrame({
        "number": [0, 1, 2], "state": ["COMPLETE", "PRUNED", "COMPLETE"], "kl": [0.1, None, 0.2],
        "bytes_fp32": [2e6, None, 1e5], "feasible": [True, True, True],
        "datetime_start": [t0, t0, t0 + pd.Timedelta(seconds=10)],
        "datetime_complete": [t0 + pd.Timedelta(seconds=10), t0 + pd.Timedelta(seconds=3),
                              t0 + pd.Timedelta(seconds=15.5)],
    })
    runs = [StudyRun("s_grid", {"search": {"sampler": "grid", "space": {"mlp_width": [1, 2]}}}, trials),
            StudyRun("s_net", {"search": {"strategy": "supernet"}}, trials, teacher={"acc": 0.9}, overhead_seconds=7.5)]
    write_runs(runs, tmp_path)
    assert is_runs_folder(tmp_path) and not is_runs_folder(tmp_path / "nope")
    back = read_runs(tmp_path)
    assert [r.name for r in back] == ["s_grid", "s_net"] and back[1].teacher == {"acc": 0.9}
    pd.testing.assert_frame_equal(hv_curves(runs), hv_curves(back))
    assert [r.method for r in back] == ["grid", "supernet"]
