"""The report writer on synthetic trial tables: files, self-contained HTML, compare fronts, empty study."""

import numpy as np
import pandas as pd

from gped_search.report.tables import pareto_front
from gped_search.report.writer import markdown_table, write_report

OBJ = {"kl": "minimize", "bytes_fp32": "minimize"}


def table(n, seed, family=("mlp", "cnn")):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "number": np.arange(n), "state": ["COMPLETE"] * (n - 1) + ["FAIL"],
        "kl": rng.uniform(0.01, 1, n), "bytes_fp32": rng.uniform(1e3, 1e6, n),
        "family": [family[i % len(family)] for i in range(n)], "lambda_g": [0.0, 1e-3] * (n // 2) + [0.0] * (n % 2),
        "feasible": True, "fail_reason": [None] * (n - 1) + ["DivergenceError: student diverged"],
    })


def test_write_report_files_and_front(tmp_path):
    df = table(12, 0)
    res = write_report(df, OBJ, tmp_path, title="synthetic", settings={"name": "synthetic"},
                       teacher={"teacher_acc": 0.98}, compare={"grid": table(8, 1)})
    w = res["written"]
    for key in ("trials_csv", "front_csv", "index_html", "summary_md", "hypervolume.png",
                "pareto_kl_vs_bytes_fp32.png", "pareto_kl_vs_bytes_fp32_lambda.png"):
        assert key in w and (tmp_path / w[key].split("/")[-1]).stat().st_size > 0, key
    html = (tmp_path / "index.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and 'src="http' not in html
    assert "DivergenceError" in html  # failed trials listed with their reason
    saved = pd.read_csv(tmp_path / "trials.csv")
    expected = set(pareto_front(df, OBJ)["number"])
    assert set(saved.loc[saved["on_front"], "number"]) == expected
    assert set(pd.read_csv(tmp_path / "front.csv")["number"]) == expected
    assert 11 not in expected  # the FAIL row never reaches the front
    assert res["summary"]["front_size"] == len(expected) and res["summary"]["hypervolume"] > 0


def test_write_report_empty_study(tmp_path):
    df = pd.DataFrame(columns=["number", "state", "kl", "bytes_fp32", "feasible", "fail_reason"])
    res = write_report(df, OBJ, tmp_path, title="empty")
    assert res["summary"]["front_size"] == 0
    assert "no complete trial" in (tmp_path / "summary.md").read_text()


def test_markdown_table_escapes_pipes():
    md = markdown_table(pd.DataFrame({"a": ["x|y"], "b": [0.000012345]}))
    assert md.splitlines()[2] == "| x/y | 1.234e-05 |"


def test_report_says_first_when_the_front_was_selected_on_test_data(tmp_path):
    import pandas as pd

    from gped_search.report.writer import write_report

    df = pd.DataFrame({"number": [0, 1], "state": "COMPLETE", "kl": [0.1, 0.2], "bytes_fp32": [200, 100],
                       "selection_split": "test", "test_kl": [0.1, 0.2]})
    write_report(df, {"kl": "minimize", "bytes_fp32": "minimize"}, tmp_path, title="t")
    assert (tmp_path / "summary.md").read_text().splitlines()[0].startswith("> Selected on TEST data")
    assert "Selected on TEST data" in (tmp_path / "index.html").read_text().split("<h1>")[0]


def test_a_second_report_of_the_same_trials_reads_its_figures_back_and_any_change_redraws(tmp_path, monkeypatch):
    import gped_search.report.figure_cache as fc

    monkeypatch.setenv("GPED_REPORT_WORKERS", "1")  # every figure drawn in this process, where it is counted
    drawn = []
    real = fc.png_bytes
    monkeypatch.setattr(fc, "png_bytes", lambda fig: drawn.append(fig) or real(fig))
    df = table(12, 0)
    write_report(df, OBJ, tmp_path, title="synthetic", teacher={"teacher_mc_floor_kl": 0.01})
    first = {p.name: p.read_bytes() for p in tmp_path.glob("*.png")}
    html = (tmp_path / "index.html").read_text()
    assert len(drawn) == len(first) >= 4
    drawn.clear()
    write_report(df, OBJ, tmp_path, title="synthetic", teacher={"teacher_mc_floor_kl": 0.01})
    assert drawn == []  # nothing drawn, the same report
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.png")} == first
    assert (tmp_path / "index.html").read_text() == html
    (tmp_path / "parallel.png").write_bytes(b"not the figure")  # a PNG changed on disk is drawn again
    write_report(df, OBJ, tmp_path, title="synthetic", teacher={"teacher_mc_floor_kl": 0.01})
    assert len(drawn) == 1 and (tmp_path / "parallel.png").read_bytes() == first["parallel.png"]
    for change in (
        {"teacher": {"teacher_mc_floor_kl": 0.02}},  # the floor line moves
        {"exported": {0: "somewhere"}},  # a star moves
    ):
        drawn.clear()
        write_report(df, OBJ, tmp_path, title="synthetic", **{"teacher": {"teacher_mc_floor_kl": 0.01}, **change})
        assert len(drawn) >= 4, change
    drawn.clear()
    df2 = df.copy()
    df2.loc[3, "kl"] *= 0.5  # one trial's value
    write_report(df2, OBJ, tmp_path, title="synthetic", teacher={"teacher_mc_floor_kl": 0.01})
    assert len(drawn) >= 4
