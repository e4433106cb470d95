"""Issue 28: a recommendation users can steer, the study folder found from anywhere, exports that keep no
stale files, settings changes kept, interrupted trials retried, selection on validation only, live
progress, and compare beyond a grid."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import QUICKSTART, ROOT, cli, one_error_line, run_tiny_study, study_frame, tiny_sets


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 3-trial tiny quickstart study, run through the CLI: (report_dir, --set arguments)."""
    return run_tiny_study(tmp_path_factory.mktemp("steer"))


# ------------------------------------------------------------------- item 5: the study folder from anywhere


def test_study_folder_is_found_from_the_study_file_not_the_current_directory(tmp_path, monkeypatch):
    import shutil

    import yaml
    from conftest import TINY

    proj = tmp_path / "proj"
    (proj / "studies").mkdir(parents=True)
    data = yaml.safe_load(Path(QUICKSTART).read_text())
    data["name"] = "q"  # report_dir: the default, relative "reports"
    study_file = proj / "studies" / "q.yaml"
    study_file.write_text(yaml.safe_dump(data))
    sets = [a for o in (*TINY, "device=cpu") for a in ("--set", o)]
    monkeypatch.chdir(proj)
    rc, _, err = cli(["run", "studies/q.yaml", "--n-trials", "1", "--no-progress", "--no-report", *sets])
    assert rc == 0, err
    assert (proj / "reports" / "q" / "study.db").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc, out, err = cli(["status", str(study_file), *sets])
    assert rc == 0, err
    assert "complete 1" in out and str(proj / "reports" / "q" / "study.db") in out
    rc, out, err = cli(["report", str(study_file), *sets])
    assert rc == 0, err
    assert (proj / "reports" / "q" / "index.html").is_file() and not (elsewhere / "reports").exists()
    # a relocated folder is still found with --set report_dir, relative to the current directory
    shutil.move(proj / "reports" / "q", elsewhere / "moved" / "q")
    rc, out, err = cli(["status", str(study_file), "--set", "report_dir=moved", *sets])
    assert rc == 0, err
    assert "complete 1" in out


# ------------------------------------------------------------------- item 6: an export into a used folder


def test_export_into_a_used_folder_removes_the_earlier_exports_files_only(study, tmp_path):
    root, sets = study
    out = tmp_path / "exported"
    rc, _, err = cli(["export", QUICKSTART, "--trial", "0", "--out", str(out), *sets])
    assert rc == 0, err
    assert {"student.pt", "student.pt2", "reproduce_accuracy.py"} <= {p.name for p in out.iterdir()}
    (out / "student.onnx").write_bytes(b"another model's ONNX")  # as a --format onnx export would leave
    (out / "notes.txt").write_text("the user's own file")
    rc, stdout, err = cli(["export", QUICKSTART, "--trial", "1", "--format", "checkpoint", "--out", str(out), *sets])
    assert rc == 0, err
    names = {p.name for p in out.iterdir()}
    assert names == {"student.pt", "model_card.json", "model_card.md", "notes.txt"}, names
    assert "removed the files of an earlier export" in stdout and "student.onnx" in stdout
    assert "student.pt2" in stdout.splitlines()[-1]
    assert not stdout.lstrip().startswith("{")  # lines, not raw JSON (issue 28 item 15)
    assert "exported trial 1" in stdout and "verified:" in stdout


def test_widening_the_search_space_keeps_the_earlier_space(tmp_path, caplog):
    import yaml

    sets = tiny_sets(tmp_path, "device=cpu", "search.space={mlp_width: {low: 4, high: 16}}")
    rc, _, err = cli(["run", QUICKSTART, "--n-trials", "1", "--no-progress", "--no-report", *sets])
    assert rc == 0, err
    folder = tmp_path / "quickstart"
    assert not (folder / "study.history.yaml").exists()
    rc, _, err = cli(["run", QUICKSTART, "--n-trials", "1", "--no-progress", "--no-report", *sets])  # same: no entry
    assert rc == 0 and not (folder / "study.history.yaml").exists()
    wider = tiny_sets(tmp_path, "device=cpu", "search.space={mlp_width: {low: 4, high: 48}}")
    rc, _, err = cli(["run", QUICKSTART, "--n-trials", "2", "--no-progress", "--no-report", *wider])
    assert rc == 0, err
    assert "search.space" in err and "study.history.yaml" in err
    history = yaml.safe_load((folder / "study.history.yaml").read_text())
    # (--set search.space=... merges into the study file's space: compare the parameter it changed)
    assert [h["settings"]["search"]["space"]["mlp_width"]["high"] for h in history] == [16]
    assert yaml.safe_load((folder / "study.yaml").read_text())["search"]["space"]["mlp_width"]["high"] == 48
    # a list of choices cannot change within an Optuna study: one line, not Optuna's traceback
    listed = tiny_sets(tmp_path, "device=cpu", "search.space={mlp_width: [8, 16]}")
    rc, _, err = cli(["run", QUICKSTART, "--n-trials", "3", "--no-progress", "--no-report", *listed])
    assert rc == 2 and "search.space.mlp_width" in one_error_line(err)
    assert len(yaml.safe_load((folder / "study.history.yaml").read_text())) == 1  # nothing recorded on refusal


# ------------------------------------------------------------------- item 17: selection hygiene


def test_validation_ood_images_are_the_ood_datasets_training_images():
    from gped_search.config import load_study
    from gped_search.data import load_split, make_bundle, resolve_root

    if not (resolve_root(None) / "FashionMNIST" / "raw").is_dir():
        pytest.skip("no MNIST / Fashion-MNIST data root")
    cfg = load_study(ROOT / "studies" / "mnist_cnn.yaml", ["data.train_subset=100", "data.validation=500"])
    assert cfg.data.mask_size == 0 and cfg.data.ood is not None
    b = make_bundle(cfg.data, cfg.seed)
    assert b.val_ood is not None and len(b.val_ood) == len(b.val) == 500 and len(b.ood) == 10_000

    def rows(x):
        return {hash(tuple(r)) for r in x.flatten(1).mul(255).round().int().tolist()}

    val_ood = rows(b.val_ood.x)
    assert val_ood <= rows(load_split("fashion_mnist", True, cfg.data.root).x)  # Fashion-MNIST training images
    assert not val_ood & rows(b.ood.x)  # none of them is a test OOD image


def test_selection_ood_auroc_scores_other_ood_images_than_the_test_one():
    """``ood_auroc`` (selection) is scored on ``val_ood``, ``test_ood_auroc`` on ``ood``: a student that tells
    the test OOD images apart perfectly and the validation ones not at all gets 1.0 and 0.5."""
    from types import SimpleNamespace

    import torch

    from gped_search.data import Split
    from gped_search.engine.scoring import selection_scores
    from gped_search.models import build, student_arch

    torch.manual_seed(0)
    model = build(student_arch("mlp", (1, 8, 8), 10, (("predictive", 10),), widths=(8,))).eval()
    with torch.no_grad():  # a bright input gets a confident (low-entropy) prediction, a dark one uniform
        for prm in model.parameters():
            prm.zero_()
        model.body[1].weight.fill_(1.0 / 64)
        model.heads[0].weight[0] = 20.0
    n = 40
    dark = torch.zeros(n, 1, 8, 8)
    y = torch.zeros(n, dtype=torch.long)

    def means(k):
        return {"predictive": torch.full((k, 10), 0.1)}

    bundle = SimpleNamespace(
        test=Split(dark, y), val=Split(dark, y), ood=Split(torch.ones(n, 1, 8, 8), y), val_ood=Split(dark.clone(), y)
    )
    teacher = SimpleNamespace(test=means(n), val=means(n), ood=means(n))
    rec = selection_scores(model, teacher, SimpleNamespace(bundle=bundle))
    assert rec["selection_split"] == "validation"
    assert "ood_auroc" in rec and "test_ood_auroc" in rec and "teacher_ood_auroc" not in rec
    # the test OOD images (bright) are told apart (inverted: the student is sure of them), the validation
    # OOD images (dark, like the in-distribution ones) are not: the selection never saw the test images
    assert rec["test_ood_auroc"] == pytest.approx(0.0) and rec["ood_auroc"] == pytest.approx(0.5)
    assert rec["test_teacher_ood_auroc"] == pytest.approx(0.5)


# ------------------------------------------------------------------- item 2: a recommendation users can steer


def test_export_best_under_and_require_pick_on_validation_figures(study, tmp_path):
    root, sets = study
    df = study_frame(root)
    done = df[df["state"] == "COMPLETE"]
    limit = float(done["bytes_fp32"].median())
    ok = done[done["bytes_fp32"] <= limit]
    want = int(ok.loc[ok["kl"].astype(float).idxmin(), "number"])
    rc, out, err = cli(["export", QUICKSTART, "--best-under", f"{limit / 1000}kB", "--out", str(tmp_path / "a"), *sets])
    assert rc == 0, err
    assert f"exported trial {want} " in out
    acc = float(done["student_acc"].max())
    best_acc = done[done["student_acc"] >= acc]
    want = int(best_acc.loc[best_acc["kl"].astype(float).idxmin(), "number"])
    rc, out, err = cli(["export", QUICKSTART, "--require", f"acc>={acc}", "--out", str(tmp_path / "b"), *sets])
    assert rc == 0, err
    assert f"exported trial {want} " in out
    both = done[(done["student_acc"] >= float(done["student_acc"].min())) & (done["bytes_fp32"] <= limit)]
    rc, out, err = cli(
        [
            "export",
            QUICKSTART,
            "--require",
            f"acc>={float(done['student_acc'].min())}",
            "--best-under",
            str(int(limit)),
            "--trial",
            "best:bytes_fp32",
            "--out",
            str(tmp_path / "c"),
            *sets,
        ]
    )
    assert rc == 0, err
    assert f"exported trial {int(both.loc[both['bytes_fp32'].astype(float).idxmin(), 'number'])} " in out


@pytest.mark.parametrize(
    "args, words",
    [
        (["--best-under", "1B"], ["no complete trial", "bytes_fp32 <= 1"]),
        (["--best-under", "5 parsecs"], ["--best-under"]),
        (["--best-under", "0kB"], ["--best-under"]),
        (["--require", "acc=>0.9"], ["--require"]),
        (["--require", "test_acc>=0.9"], ["--require", "test figures never select"]),
        (["--require", "accuracy_top5>=0.9"], ["--require accuracy_top5", "valid:"]),
        (["--require", "acc>=2"], ["no complete trial", "student_acc >= 2"]),
        (["--require", "acc>=0.1", "--trial", "0"], ["--trial 0 names one trial"]),
        ([], ["say which student"]),
    ],
)
def test_export_steering_errors_are_one_line(study, tmp_path, args, words):
    _, sets = study
    rc, out, err = cli(["export", QUICKSTART, *args, "--out", str(tmp_path / "x"), *sets])
    line = one_error_line(err)
    assert rc == 2 and all(w in line for w in words), line
    assert not (tmp_path / "x").exists()


def test_knee_far_below_another_front_member_on_accuracy_is_warned(tmp_path):
    import pandas as pd

    from gped_search.report.tables import knee_accuracy_gap, knee_point
    from gped_search.report.writer import recommendation, write_report

    front = pd.DataFrame(
        {
            "number": [0, 1, 2],
            "kl": [0.01, 0.05, 0.3],
            "bytes_fp32": [9e5, 1e5, 1e4],
            "student_acc": [0.97, 0.80, 0.5],
            "state": "COMPLETE",
            "arch": ["CNN", "MLP", "MLP"],
        }
    )
    obj = {"kl": "minimize", "bytes_fp32": "minimize"}
    assert int(front.loc[knee_point(front, obj), "number"]) == 1
    gap = knee_accuracy_gap(front, knee_point(front, obj))
    assert gap["trial"] == 0 and gap["knee"] == 1 and "17.0 points below trial 0" in gap["warning"]
    rec = recommendation(front, obj)
    assert "--trial 0" in rec["warning"]
    summary = write_report(front, obj, tmp_path / "r", title="t")["summary"]
    assert summary["recommended"]["warning"] == gap["warning"]
    md = (tmp_path / "r" / "summary.md").read_text()
    assert "Warning: the knee (trial 1) has validation accuracy 80.0 %" in md
    page = (tmp_path / "r" / "index.html").read_text().split("<h2>")[0]
    assert "<b>Warning:</b> the knee (trial 1) has validation accuracy 80.0 %" in page
    front.loc[0, "student_acc"] = 0.84  # within 5 points: no warning
    assert knee_accuracy_gap(front, knee_point(front, obj)) is None and "warning" not in recommendation(front, obj)


# ------------------------------------------------------------------- item 8: an interrupted trial is retried


@pytest.mark.parametrize("batch", [1, 2])
def test_an_interrupted_trial_records_why_and_is_retried_on_resume(tmp_path, monkeypatch, batch):
    from gped_search.config import load_study
    from gped_search.search import open_study, trials_frame
    from gped_search.search import trials as trials_mod

    name = "train_trial" if batch == 1 else "train_trials"
    real, calls = getattr(trials_mod, name), []

    def stop_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(trials_mod, name, stop_on_second)
    sets = tiny_sets(tmp_path, "device=cpu", f"search.batch={batch}")
    argv = ["run", QUICKSTART, "--n-trials", str(2 * batch), "--no-progress", "--no-report", *sets]
    rc, _, err = cli(argv)
    assert rc == 130 and "interrupted" in err
    cfg = load_study(QUICKSTART, [f"report_dir={tmp_path}", "device=cpu"])
    df = trials_frame(open_study(cfg, create=False))
    stopped = df[df["state"] == "FAIL"]
    assert len(stopped) == batch and stopped["fail_reason"].str.startswith("interrupted").all()
    monkeypatch.setattr(trials_mod, name, real)
    rc, _, err = cli(argv)
    assert rc == 0, err
    study = open_study(cfg, create=False)
    by_number = {t.number: t for t in study.get_trials()}
    retries = [t for t in by_number.values() if "retry_of" in t.user_attrs]
    assert sorted(t.user_attrs["retry_of"] for t in retries) == sorted(stopped["number"])
    for t in retries:
        assert t.state.name == "COMPLETE" and t.params == by_number[t.user_attrs["retry_of"]].params
    rc, _, err = cli(argv)  # a third run enqueues nothing again
    assert rc == 0 and len([t for t in study.get_trials() if "retry_of" in t.user_attrs]) == len(retries)


# ------------------------------------------------------------------- item 11: exports in the report


def test_report_stars_only_exports_that_still_hold_their_trial_and_names_no_absolute_path(study, tmp_path):
    import shutil

    root, sets = study
    keep, gone = tmp_path / "keep", tmp_path / "throwaway"
    assert cli(["export", QUICKSTART, "--trial", "0", "--out", str(keep), *sets])[0] == 0
    assert cli(["export", QUICKSTART, "--trial", "1", "--out", str(gone), *sets])[0] == 0
    assert cli(["export", QUICKSTART, "--trial", "2", "--out", str(keep), *sets])[0] == 0  # overwrites trial 0's
    shutil.rmtree(gone)
    out = tmp_path / "report"
    rc, _, err = cli(["report", QUICKSTART, "--out", str(out), *sets])
    assert rc == 0, err
    text = (out / "summary.md").read_text() + (out / "index.html").read_text()
    assert str(tmp_path) not in text and "throwaway" not in text
    from gped_search.config import load_study
    from gped_search.search import open_study
    from gped_search.search.results import live_exports

    assert live_exports(open_study(load_study(QUICKSTART, [f"report_dir={root}"]), create=False)) == {2: "keep/"}


# ------------------------------------------------------------------- item 4: signs of life during a trial


def test_run_shows_a_labelled_trials_bar_and_the_students_live_loss(tmp_path):
    rc, out, err = cli(["run", QUICKSTART, "--n-trials", "1", "--no-report", *tiny_sets(tmp_path, "device=cpu")])
    assert rc == 0, err
    assert "data: digits, " in err and "teacher: sampled (600 SGLD iterations); 0 trials done before" in err
    assert "trials (0 done before)" in err
    assert "student" in err and "loss " in err  # the trial's step bar with its newest loss


def test_dashboard_artifacts_are_served_as_binary(study):
    import optuna

    from gped_search.config import load_study
    from gped_search.search import open_study

    root, _ = study
    st = open_study(load_study(QUICKSTART, [f"report_dir={root}"]), create=False)
    metas = [m for t in st.get_trials() for m in optuna.artifacts.get_all_artifact_meta(t, storage=st._storage)]
    assert metas and {m.mimetype for m in metas} == {"application/octet-stream"}
    assert "distillation loss" in st.user_attrs["intermediate_values"]  # described in the dashboard


# ------------------------------------------------------------------- item 7: compare beyond a grid


def _run(name, sampler, seed, sizes, family_space=None):
    import numpy as np
    import pandas as pd

    from gped_search.report.compare import StudyRun

    n = len(sizes)
    t0 = pd.Timestamp("2026-01-01")
    trials = pd.DataFrame(
        {
            "number": range(n),
            "state": "COMPLETE",
            "kl": np.linspace(0.5, 0.1, n),
            "bytes_fp32": sizes,
            "test_kl": np.linspace(0.5, 0.1, n),
            "test_student_acc": np.linspace(0.8, 0.95, n),
            "datetime_start": [t0 + pd.Timedelta(seconds=10 * i) for i in range(n)],
            "datetime_complete": [t0 + pd.Timedelta(seconds=10 * i + 5) for i in range(n)],
            "arch": "MLP",
            "family": "mlp",
        }
    )
    space = {"mlp_width": {"low": 4, "high": 64}} | ({"family": family_space} if family_space else {})
    cfg = {
        "data": {"dataset": "digits", "mask_size": 0},
        "student": {"family": "mlp"},
        "search": {"sampler": sampler, "seed": seed, "space": space},
    }
    return StudyRun(name, cfg, trials)


def test_compare_two_searches_names_families_keeps_both_and_sizes_budgets_to_the_students(tmp_path):
    from gped_search.report.compare import setting_label, size_caps, write_comparison

    assert _run("c", "tpe", 0, [1e3], ["cnn"]).setting.startswith("CNN students, DIGITS")
    assert _run("c", "tpe", 0, [1e3], {"values": ["mlp", "cnn"]}).setting.startswith("MLP+CNN students")
    assert setting_label({"student": {"family": "mlp"}}).startswith("MLP students")
    a = _run("search_a", "tpe", 1, [2e3, 6e3, 12e3, 30e3])
    b = _run("search_b", "nsga2", 0, [3e3, 5e3, 9e3, 25e3])
    caps = size_caps([a, b])
    assert max(caps) >= 30e3 and min(caps) < 30e3 and all(c < 50e3 for c in caps), caps  # not 50 kB..1.5 MB
    res = write_comparison([a, b], tmp_path)
    md = (tmp_path / "comparison.md").read_text()
    assert "summary" not in res["written"] and not (tmp_path / "summary.png").exists()
    assert "No setting has a grid study" in md
    assert "search_a" in md and "search_b" in md  # each method's front, the higher seed's study too
    assert "| 50 |" not in md and "| 1500 |" not in md  # no size budget above every student
