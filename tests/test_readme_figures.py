"""The README's and write-ups' generated tables equal what benchmarks/readme_figures.py makes from the
committed data (issue 28, item 13): a figure edited by hand, or data changed without regenerating, fails."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "benchmarks" / "readme_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_blocks_equal_what_the_script_makes_from_the_committed_data():
    rf = _script()
    assert rf.stale_blocks() == []
    for name, (path, _) in rf.BLOCKS.items():
        assert f"<!-- generated: {name} -->" in path.read_text(), (name, path)


def test_the_headline_write_up_uses_its_own_grid_scaling_csv():
    rf = _script()
    row = next(line for line in rf.grid_scaling().splitlines() if line.startswith("| 14 |"))
    assert "0.0763 (1600-1600)" in row and "0.0697 (1600-1600)" in row  # was 0.0770 / 0.0699 by hand
    text = (rf.HEADLINE / "README.md").read_text()
    assert "0.0770" not in text and "0.0699" not in text


def test_a_hand_edit_is_caught(tmp_path, monkeypatch):
    rf = _script()
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text().replace("0.407 (0.001)", "0.417 (0.001)", 1))
    monkeypatch.setitem(rf.BLOCKS, "headline-hypervolume", (readme, rf.headline_hypervolume))
    monkeypatch.setattr(rf, "ROOT", tmp_path)
    assert rf.stale_blocks() == ["README.md"]
    readme.write_text(rf.render(readme.read_text()))
    assert "0.407 (0.001)" in readme.read_text() and rf.stale_blocks() == []


def test_the_quickstart_figure_is_drawn_from_committed_data(tmp_path):
    import json

    import pandas as pd

    rf = _script()
    meta = json.loads((rf.QUICKSTART_DATA / "quickstart.json").read_text())
    trials = pd.read_csv(rf.QUICKSTART_DATA / "quickstart_trials.csv")
    assert meta["knee"] in set(trials["number"]) and set(meta["objectives"]) <= set(trials.columns)
    assert "latency_ms" not in meta["objectives"]  # the shipped quickstart's objectives (item 18)
    out = rf.quickstart_png(tmp_path / "q.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_the_comparison_images_are_redrawn_from_their_committed_csv(tmp_path):
    import shutil

    import numpy as np
    from matplotlib.image import imread

    rf = _script()
    folder = tmp_path / "headline_comparison"
    shutil.copytree(rf.HEADLINE, folder, ignore=shutil.ignore_patterns("*.png"))
    written = rf.comparison_pngs(folder)
    assert sorted(p.name for p in written) == ["grid_scaling.png", "summary.png"]
    for p in written:  # the committed image is what the script draws from the committed CSV files
        new, old = imread(p), imread(rf.HEADLINE / p.name)
        assert new.shape == old.shape and np.abs(new - old).mean() < 1e-3, p.name
    # a table changed by hand changes the figure
    hv = folder / "hv_cnn_students__mnist__mask_0px.csv"
    hv.write_text(hv.read_text().replace(",grid,", ",search_tpe,"))
    rf.comparison_pngs(folder)
    new, old = imread(folder / "summary.png"), imread(rf.HEADLINE / "summary.png")
    assert new.shape != old.shape or np.abs(new - old).mean() > 1e-3
