"""benchmarks/suite.py: the run order of a suite's studies and the overrides each run gets."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from suite import Suite  # noqa: E402


def _suite(tmp_path: Path, **kw) -> Suite:
    for stem in ("mlp_mask0_grid", "mlp_mask0_halving14", "mlp_mask7_grid", "cnn_mask0_grid", "_base"):
        (tmp_path / f"{stem}.yaml").write_text("name: x\n")
    return Suite(studies=tmp_path, reports=tmp_path / "out", prefix="h", order=("grid", "halving14"), **kw)


def _names(plan) -> list[str]:
    return [f"{f.stem}:{seed}" for f, seed in plan]


def test_a_suite_runs_setting_by_setting_and_an_interleaved_one_seed_by_seed(tmp_path):
    only = ["mlp_mask0_grid", "mlp_mask0_halving14"]
    assert _names(_suite(tmp_path).schedule(only, [0, 1])) == [
        "mlp_mask0_grid:0",
        "mlp_mask0_grid:1",
        "mlp_mask0_halving14:0",
        "mlp_mask0_halving14:1",
    ]
    assert _names(_suite(tmp_path, interleave=True).schedule(only, [0, 1])) == [
        "mlp_mask0_grid:0",
        "mlp_mask0_halving14:0",
        "mlp_mask0_grid:1",
        "mlp_mask0_halving14:1",
    ]
    # without --only: settings in name order, kinds in the suite's order; bases (_*.yaml) never run
    assert _names(_suite(tmp_path, interleave=True).schedule(None, [0])) == [
        "cnn_mask0_grid:0",
        "mlp_mask0_grid:0",
        "mlp_mask0_halving14:0",
        "mlp_mask7_grid:0",
    ]


def test_a_relocated_suite_runs_its_studies_in_its_own_report_folder(tmp_path):
    f = tmp_path / "mlp_mask0_grid.yaml"
    assert _suite(tmp_path).overrides(f, 2) == ["name=h_mlp_mask0_grid_s2"]
    assert _suite(tmp_path, relocate=True).overrides(f, 2) == [
        "name=h_mlp_mask0_grid_s2",
        f"report_dir={tmp_path / 'out'}",
    ]
