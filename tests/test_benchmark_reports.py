"""The benchmark write-ups' generated tables equal what their scripts make from the committed trial CSVs
(issue 29's int8 searches), and the hypervolume they report equals a brute-force count."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_int8_results_md_is_what_report_makes_from_the_committed_trials():
    m = _load("int8_search")
    df = pd.read_csv(m.OUT / "trials.csv")
    assert set(df["precision"]) == {"fp32", "int8"} and (df.loc[df["kind"] == "fp32", "precision"] == "fp32").all()
    hv, cost, lat = m.hv_table(df), m.kl_cost(df), m.latency_table(df)
    assert m.markdown(hv, cost, lat) == (m.OUT / "results.md").read_text()


def test_int8_hypervolume_equals_a_brute_force_grid_count():
    m = _load("int8_search")
    rng = np.random.default_rng(0)
    rows = []
    for kind in ("fp32", "int8"):
        for i in range(6):
            rows.append(
                {
                    "setting": "s",
                    "kind": kind,
                    "seed": 0,
                    "precision": "int8" if kind == "int8" and i % 2 else "fp32",
                    "kl": rng.uniform(0.01, 0.3),
                    "bytes": 10 ** rng.uniform(4, 7),
                    "latency_ms": 10 ** rng.uniform(-2, -1),
                }
            )
    df = pd.DataFrame(rows)
    hv = m.hv_table(df)
    pts = np.column_stack([df["kl"], np.log10(df["bytes"])])
    lo, hi = pts.min(0), pts.max(0)
    ref = hi + 0.1 * (hi - lo)
    g = np.stack(np.meshgrid(np.linspace(lo[0], ref[0], 801), np.linspace(lo[1], ref[1], 801)), -1).reshape(-1, 2)
    for kind in ("fp32", "int8"):
        p = pts[(df["kind"] == kind).to_numpy()]
        covered = ((g[:, None, :] >= p[None]).all(-1)).any(1).mean()  # share of the box some point dominates
        got = hv[(hv["kind"] == kind) & (hv["axis"] == "bytes")]["hypervolume"].item()
        assert got == pytest.approx(covered, abs=5e-3)


def test_recipe_headline_md_is_what_report_makes_from_the_committed_trials():
    m = _load("recipe_headline")
    old, new = m._old(), pd.read_csv(m.OUT / "trials.csv")
    assert len(new) == 42 and set(new["arch"]) == set(old["arch"])  # 14 grid students x 3 seeds each
    assert m.markdown(m.table(old, new), old, new) == (m.OUT / "headline.md").read_text()
