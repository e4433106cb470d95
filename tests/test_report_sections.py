"""The report shows everything a study holds (issue 28, item 10): learning curves, trial durations, the
downstream and robustness results once run, and a per-layer before/after table of pruned students."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import QUICKSTART, cli, tiny_sets

from gped_search.report.sections import ReportExtras
from gped_search.report.writer import write_report

OBJ = {"kl": "minimize", "bytes_fp32": "minimize"}


def _trials(n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"number": np.arange(n), "state": "COMPLETE", "kl": rng.uniform(0.05, 0.5, n),
                         "bytes_fp32": rng.uniform(2e3, 9e4, n), "duration_s": rng.uniform(3, 30, n)})


def test_sections_render_in_html_and_markdown(tmp_path):
    fig_dir = tmp_path / "study" / "downstream"
    fig_dir.mkdir(parents=True)
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([0, 1], [0, 1])
    fig.savefig(fig_dir / "roc_occlusion_4px.png")
    extras = ReportExtras(
        curves={n: {s: 2.0 / (1 + s / 10 + n) for s in range(3, 61, 3)} for n in range(6)},
        downstream=pd.DataFrame({"model": ["teacher", "#1 MLP"], "auroc_predictive_entropy": [0.91, 0.88]}),
        downstream_dir=fig_dir,
        robustness=pd.DataFrame({"model": ["#1 MLP"], "attack": ["pgd"], "eps": [0.1], "accuracy": [0.4]}),
        pruned=pd.DataFrame([{"trial": 2, "layer": "body.1", "kind": "Linear", "shape_before": "100x64",
                              "shape_after": "50x64", "params_before": 6500, "params_after": 3250,
                              "macs_before": 6400, "macs_after": 3200}]),
    )
    write_report(_trials(), OBJ, tmp_path / "study", title="t", extras=extras)
    page = (tmp_path / "study" / "index.html").read_text()
    for key in ("curves", "durations", "downstream", "robustness", "pruning"):
        assert f'<h2 id="{key}">' in page, key
    assert "0.91" in page and "6500" in page and "50x64" in page
    assert page.count("data:image/png;base64,") >= 2 + 2 + 1  # pair plot etc., curves + durations, the ROC
    md = (tmp_path / "study" / "summary.md").read_text()
    assert "## Learning curves" in md and "(downstream/roc_occlusion_4px.png)" in md
    assert "## Pruned students, layer by layer" in md
    assert (tmp_path / "study" / "learning_curves.png").is_file()
    assert (tmp_path / "study" / "durations.png").is_file()
    assert "duration [s]" in page  # per-trial durations in the all-trials table


def test_a_pruned_study_reports_each_layer_before_and_after(tmp_path):
    """A real tiny study whose students are all pruned to half their units: the per-layer table's
    'after' columns add up to each trial's recorded parameters and MACs."""
    sets = tiny_sets(tmp_path, "device=cpu", "prune.rule=ratio", "prune.ratio=0.5",
                     "search.space={family: [mlp], mlp_depth: 2, mlp_width: {low: 8, high: 32}}")
    rc, _, err = cli(["run", QUICKSTART, "--n-trials", "2", "--no-progress", *sets])
    assert rc == 0, err
    rc, _, err = cli(["report", QUICKSTART, *sets])
    assert rc == 0, err
    folder = tmp_path / "quickstart"
    page = (folder / "index.html").read_text()
    assert '<h2 id="pruning">' in page and '<h2 id="curves">' in page and '<h2 id="durations">' in page
    trials = pd.read_csv(folder / "trials.csv")
    from gped_search.search.report_data import pruned_layers

    table = pruned_layers(folder, trials)
    assert table is not None and set(table["trial"]) == set(trials["number"])
    for n, g in table.groupby("trial"):
        row = trials[trials["number"] == n].iloc[0]
        assert g["params_after"].sum() == row["params"]
        assert g["macs_after"].sum() == row["macs_conv_linear"]
        assert (g["params_after"] <= g["params_before"]).all() and g["params_after"].sum() < g["params_before"].sum()
        assert list(g["kind"]) == ["Linear"] * 4  # two hidden layers and two heads
    cached = folder / "pruned_layers.csv"  # written by the report: a re-run reads it, without torch
    assert cached.is_file() and pd.read_csv(cached).equals(table)
