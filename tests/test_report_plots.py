"""Tests for gped_search.report.plots: figures are returned, labelled and scaled."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from gped_search.report import (
    axis_spec,
    hypervolume_history,
    plot_accuracy_rejection,
    plot_hypervolume,
    plot_pareto_pair,
    plot_roc,
)

OBJ = {
    "kl": "minimize",
    "bytes_fp32": "minimize",
    "latency_ms": "minimize",
    "student_acc": "maximize",
}


def synthetic_trials(n: int = 40, seed: int = 0, wide_bytes: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    fam = rng.choice(["mlp", "cnn"], n)
    lo, hi = (3.0, 6.5) if wide_bytes else (5.0, 5.5)
    b = 10 ** rng.uniform(lo, hi, n)
    state = np.array(["COMPLETE"] * n, dtype=object)
    state[[1, 2]] = ["PRUNED", "FAIL"]
    feasible = np.ones(n, dtype=bool)
    feasible[3] = False
    return pd.DataFrame(
        {
            "number": np.arange(n),
            "state": state,
            "feasible": feasible,
            "family": fam,
            "lambda_g": rng.choice([0.0, 1e-5, 1e-4, 1e-3], n),
            "bytes_fp32": b,
            "kl": 0.05 + 1.0 / (b / 1e3) ** 0.3 * rng.uniform(1.0, 1.4, n),
            "latency_ms": rng.uniform(0.05, 2.0, n),
            "student_acc": rng.uniform(0.85, 0.99, n),
        }
    )


def has_artists(fig: Figure) -> bool:
    ax = fig.axes[0]
    return bool(ax.lines or ax.collections)


def legend_texts(fig: Figure) -> list[str]:
    leg = fig.axes[0].get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg else []


def test_pareto_pair_family_with_grid_front(tmp_path):
    df = synthetic_trials()
    gb = np.geomspace(2e3, 2e6, 6)
    grid = pd.DataFrame(
        {
            "number": range(6),
            "state": "COMPLETE",
            "bytes_fp32": gb,
            "kl": 0.1 + 1 / np.sqrt(gb / 1e3),
        }
    )
    fig = plot_pareto_pair(df, "bytes_fp32", "kl", OBJ, extra_fronts={"grid": grid})
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert has_artists(fig)
    assert "[nats]" in ax.get_ylabel() and "KL" in ax.get_ylabel()
    assert "[MB]" in ax.get_xlabel()
    assert ax.get_xscale() == "log"  # 1e3 .. 3e6 bytes spans > 2 decades
    assert ax.get_yscale() == "linear"
    texts = legend_texts(fig)
    assert any(t.startswith("grid front") for t in texts)
    assert any(t.startswith("cnn") for t in texts) and any(t.startswith("mlp") for t in texts)
    assert any(t.startswith("infeasible") for t in texts)
    assert "better" in ax.get_title()
    # the front is a staircase and its points carry trial-number labels
    steps = [ln for ln in ax.lines if ln.get_drawstyle() == "steps-post"]
    assert len(steps) == 2  # own front + grid front
    labels = [t.get_text() for t in ax.texts]
    assert labels and all(t.startswith("#") for t in labels)
    # pruned/failed/infeasible trials never get a front label
    assert not {"#1", "#2", "#3"} & set(labels)
    out = tmp_path / "pareto.png"
    fig.savefig(out)
    assert out.stat().st_size > 5_000


def test_pareto_pair_lambda_colorbar_and_units():
    df = synthetic_trials(wide_bytes=False)
    fig = plot_pareto_pair(df, "latency_ms", "student_acc", OBJ, color_by="lambda_g")
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # plot + colour bar
    assert "λ_g" in fig.axes[1].get_ylabel()
    assert any("λ_g = 0" in t for t in legend_texts(fig))
    assert ax.get_xlabel() == "latency [ms]"
    assert ax.get_ylabel().endswith("[%]")
    assert ax.get_xscale() == "linear" and ax.get_yscale() == "linear"
    assert "↖" in ax.get_title()  # lower latency, higher accuracy
    ys = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if len(c.get_offsets())])
    assert ys.max() > 80  # accuracy shown in percent
    # maximised x -> the attainment staircase changes level before each point
    fig2 = plot_pareto_pair(df, "student_acc", "kl", OBJ, color_by=None)
    assert [ln.get_drawstyle() for ln in fig2.axes[0].lines] == ["steps-pre"]


def test_pareto_pair_log_y_and_empty_frames():
    df = synthetic_trials()
    df["macs"] = df["bytes_fp32"] * 3.0
    fig = plot_pareto_pair(df, "kl", "macs", {"kl": "minimize", "macs": "minimize"}, color_by=None)
    assert fig.axes[0].get_yscale() == "log"
    assert fig.axes[0].get_ylabel() in ("MACs [M]", "MACs [k]")
    empty = plot_pareto_pair(df.iloc[:0], "bytes_fp32", "kl", OBJ)
    assert isinstance(empty, Figure) and not empty.axes[0].texts
    failed = plot_pareto_pair(df.assign(state="FAIL"), "bytes_fp32", "kl", OBJ)
    assert isinstance(failed, Figure)


@pytest.mark.parametrize(
    ("name", "values", "label", "scale"),
    [
        ("kl", [0.1], "KL(teacher‖student) [nats]", 1.0),
        ("kl_st", [0.1], "KL(student‖teacher) [nats]", 1.0),  # the reverse KL (metrics.quality)
        ("expected_entropy_mae", [0.1], "expected-entropy MAE [nats]", 1.0),  # a metric the trials record
        ("bytes_fp32", [512.0], "storage, fp32 [B]", 1.0),
        ("bytes_fp32", [2e3, 9e5], "storage, fp32 [KB]", 1e-3),
        ("bytes_int8", [3e6], "storage, int8 [MB]", 1e-6),
        ("latency_ms", [1.0], "latency [ms]", 1.0),
        ("macs", [5e6], "MACs [M]", 1e-6),
        ("params", [5e4], "parameters [k]", 1e-3),
        ("params", [500], "parameters", 1.0),
        ("student_acc", [0.9], "student accuracy [%]", 100.0),
        ("student_acc", [90.0], "student accuracy [%]", 1.0),
    ],
)
def test_axis_spec(name, values, label, scale):
    spec = axis_spec(name, values)
    assert spec.label == label
    assert spec.scale == pytest.approx(scale)


def test_plot_hypervolume_single_and_several(tmp_path):
    df = synthetic_trials()
    obj = {"kl": "minimize", "bytes_fp32": "minimize"}
    h = hypervolume_history(df, obj)
    fig = plot_hypervolume(h)
    assert isinstance(fig, Figure) and has_artists(fig)
    assert fig.axes[0].get_xlabel() == "trial number"
    both = pd.concat([h.assign(study="tpe"), h.assign(study="grid")])
    fig2 = plot_hypervolume(both)
    assert len(fig2.axes[0].lines) == 2
    fig3 = plot_hypervolume({"a": h, "b": h.iloc[:5]})
    assert [t.split(" ")[0] for t in legend_texts(fig3)] == ["a", "b"]
    out = tmp_path / "hv.png"
    fig3.savefig(out)
    assert out.stat().st_size > 5_000


def test_plot_roc_and_accuracy_rejection(tmp_path):
    f = np.linspace(0, 1, 50)
    fig = plot_roc({"teacher": (f, f**0.3, 0.8), "student": (f, f**0.5, None)})
    ax = fig.axes[0]
    assert has_artists(fig) and len(ax.lines) == 3  # two curves + chance diagonal
    texts = legend_texts(fig)
    assert texts[0] == "teacher (AUROC 0.800)"
    assert texts[1] == "student (AUROC 0.666)"  # trapezoid rule on sqrt (exact: 2/3)
    assert "rate" in ax.get_xlabel() and "rate" in ax.get_ylabel()
    fig2 = plot_accuracy_rejection({"teacher": (f, 0.9 + 0.1 * f), "student": (f, 0.85 + 0.1 * f)})
    ax2 = fig2.axes[0]
    assert has_artists(fig2)
    assert ax2.get_xlabel().endswith("[%]") and ax2.get_ylabel().endswith("[%]")
    assert ax2.lines[0].get_ydata().max() == pytest.approx(100.0)
    for name, fg in (("roc", fig), ("ar", fig2)):
        out = tmp_path / f"{name}.png"
        fg.savefig(out)
        assert out.stat().st_size > 5_000


def test_a_linear_axis_that_would_squeeze_the_small_students_is_logarithmic():
    """Issue 28 (9): bytes spanning 30x with most students small: a linear axis put them in its first fifth."""
    rng = np.random.default_rng(1)
    b = np.concatenate([rng.uniform(2e3, 6e3, 12), [3e4, 6e4]])  # 30x, median in the first 5 %
    df = pd.DataFrame({"number": np.arange(len(b)), "state": "COMPLETE", "bytes_fp32": b,
                       "kl": 0.1 + 1e3 / b})
    fig = plot_pareto_pair(df, "bytes_fp32", "kl", OBJ, color_by=None)
    assert fig.axes[0].get_xscale() == "log"
    even = df.assign(bytes_fp32=np.linspace(2e3, 6e4, len(b)))  # evenly spread: linear reads fine
    assert plot_pareto_pair(even, "bytes_fp32", "kl", OBJ, color_by=None).axes[0].get_xscale() == "linear"


def test_the_teachers_monte_carlo_floor_is_a_line_on_the_kl_axis():
    df = synthetic_trials()
    fig = plot_pareto_pair(df, "bytes_fp32", "kl", OBJ, color_by=None, floors={"kl": 0.04})
    ax = fig.axes[0]
    floor = [ln for ln in ax.lines if ln.get_linestyle() == ":" and len(ln.get_ydata())]
    assert floor and np.allclose(floor[0].get_ydata(), 0.04)
    assert ax.get_ylim()[0] <= 0.04
    assert any("Monte-Carlo floor (0.04)" in t for t in legend_texts(fig))
    wide = df.assign(kl=df["kl"] ** 3)  # spans decades: a log axis, where 1e-9 would squeeze the data
    far = plot_pareto_pair(wide, "bytes_fp32", "kl", OBJ, color_by=None, floors={"kl": 1e-9})
    assert far.axes[0].get_yscale() == "log"
    assert any("below the axis" in t for t in legend_texts(far))
    assert far.axes[0].get_ylim()[0] > 1e-4


def test_robustness_colours_keep_the_solid_pgd_dashed_fgsm_coding():
    from gped_search.report.figures import plot_robustness

    rows = []
    for model in ("teacher", "student #1", "baseline"):
        rows.append({"model": model, "attack": "clean", "eps": 0.0, "accuracy": 0.95, "entropy": 0.2})
        for attack in ("fgsm", "pgd"):
            for eps in (0.05, 0.1):
                rows.append({"model": model, "attack": attack, "eps": eps, "accuracy": 0.5, "entropy": 0.8})
    fig = plot_robustness(pd.DataFrame(rows))
    lines = {ln.get_label(): ln for ln in fig.axes[0].lines}
    for model in ("teacher", "student #1", "baseline"):
        pgd, fgsm = lines[f"{model}, pgd"], lines[f"{model}, fgsm"]
        assert pgd.get_color() == fgsm.get_color()  # one colour per model
        assert pgd.get_linestyle() == "-" and fgsm.get_linestyle() == "--"
    assert len({ln.get_color() for ln in lines.values()}) == 3


def test_accuracy_rejection_is_not_scaled_by_the_worst_student():
    f = np.linspace(0, 1, 20)
    curves = {"teacher": (f, 0.97 + 0.03 * f), "student #1": (f, 0.96 + 0.04 * f),
              "student #2": (f, 0.965 + 0.035 * f), "baseline": (f, 0.80 + 0.2 * f)}
    fig = plot_accuracy_rejection(curves)
    low = fig.axes[0].get_ylim()[0]
    assert 85.0 < low < 96.0  # the three good models fill the axis; 80 % would squeeze them
    assert any(t.startswith("baseline (starts at 80.0 %, below the axis)") for t in legend_texts(fig))
    close = plot_accuracy_rejection({k: curves[k] for k in ("teacher", "student #1")})
    assert close.axes[0].get_ylim()[0] < 96.0  # nothing cut when no model is far off
