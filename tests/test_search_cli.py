"""The search study through the ``gped-search`` command line: run, resume, workers, failures, errors.

Every study here is the quickstart study shrunk by ``--set`` overrides (a 600-iteration teacher,
60 student steps, a two-parameter space). One teacher is sampled per module and copied into the
other tests' report folders: the artifact is keyed by its settings, so the copies are reused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from gped_search.cli import main
from gped_search.config import load_study
from gped_search.search import open_study, trials_frame
from gped_search.search.storage import fail_dead_trials, mask_url
from gped_search.search.teacher import TEACHER_FILE

QUICKSTART = str(Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml")
NAME = "quickstart"
# The shipped quickstart's objectives are exact counts; these studies opt in to latency too, to test what
# a latency objective brings (the front re-timed together, ties inside the spread).
TINY = ("teacher.iterations=600", "teacher.burn_in=200", "teacher.thin=20", "teacher.bank_size=4",
        "distill.steps=60", "prune.finetune_steps=20", "search.objectives.latency_ms=minimize")
OBJECTIVES = ["kl", "bytes_fp32", "macs", "latency_ms"]
# ``search.space`` is replaced, not merged, by an override: these are the whole spaces.
SPACE = "search.space={mlp_width: {low: 4, high: 48}, lambda_g: [0.0, 0.01]}"
LR_SPACE = "search.space={lr: [0.003, 1.0e+12]}"  # PyYAML reads 1e12 (no dot, no sign) as a string


def overrides(report_dir: Path, *extra: str) -> list[str]:
    return [f"report_dir={report_dir}", *TINY, *extra]


def sets(report_dir: Path, *extra: str) -> list[str]:
    return [a for o in overrides(report_dir, *extra) for a in ("--set", o)]


def frame(report_dir: Path, *extra: str, calibrated: bool = True) -> pd.DataFrame:
    return trials_frame(open_study(load_study(QUICKSTART, overrides(report_dir, *extra)), create=False),
                        calibrated=calibrated)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gped-search: error: "), err
    assert "Traceback" not in err
    return lines[0]


def nondominated(df: pd.DataFrame, cols: list[str]) -> set[int]:
    """Numbers of the complete trials no other complete trial dominates (all objectives minimised).

    Brute force. Latency is an interval (p10..p90): one trial is better than another on it only when
    the intervals do not overlap (ties inside the measurement spread)."""
    done = df[df["state"] == "COMPLETE"]

    def iv(r, c):
        if c == "latency_ms" and "latency_p10_ms" in r and "latency_p90_ms" in r:
            return float(r["latency_p10_ms"]), float(r["latency_p90_ms"])
        return float(r[c]), float(r[c])

    pts = {int(r["number"]): [iv(r, c) for c in cols] for _, r in done.iterrows()}

    def dominates(b, a):  # b dominates a
        better = [bh < al for (bl, bh), (al, ah) in zip(b, a)]
        worse = [ah < bl for (bl, bh), (al, ah) in zip(b, a)]
        return not any(worse) and any(better)

    return {n for n, a in pts.items() if not any(dominates(b, a) for m, b in pts.items() if m != n)}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks: one intra-op thread (several threads spin badly on a shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, one_thread):
    """The 4-trial quickstart study, run once for the module: (report_dir, stdout of `run`, exit code)."""
    root = tmp_path_factory.mktemp("e2e")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["run", QUICKSTART, "--n-trials", "4", "--no-progress", "--json", *sets(root, SPACE)])
    return root, out.getvalue(), rc


def with_teacher(study_run, dest: Path) -> Path:
    """A fresh report folder holding a copy of the module's teacher artifact (and its checksum)."""
    src = study_run[0] / NAME
    (dest / NAME).mkdir(parents=True)
    for f in (TEACHER_FILE, TEACHER_FILE + ".sha256", TEACHER_FILE + ".key"):
        shutil.copy2(src / f, dest / NAME / f)
    return dest / NAME / TEACHER_FILE


# --------------------------------------------------------------------------- 1. end to end


def test_run_records_four_complete_trials(study_run):
    root, stdout, rc = study_run
    assert rc == 0
    status = json.loads(stdout)
    assert status["report"].endswith("index.html")
    assert status["trials"] == {"COMPLETE": 4}
    df = frame(root, SPACE)
    assert len(df) == 4 and set(df["state"]) == {"COMPLETE"}
    assert sorted(df["number"]) == [0, 1, 2, 3]
    for _, r in df.iterrows():
        for k in ("kl", "bytes_fp32", "macs", "latency_ms"):
            assert r[k] == r[k] and float(r[k]) >= 0, (k, r[k])  # finite objective values
        assert int(r["params"]) > 0 and float(r["bytes_fp32"]) == 4 * int(r["params"]) + 4 * int(r["buffers"])
        assert not Path(r["checkpoint"]).is_absolute()  # relative to the study folder: it can move
        assert (root / NAME / r["checkpoint"]).is_file()
        assert Path(r["checkpoint"]).parent.name == f"{int(r['number']):05d}"
    # one teacher for the whole study, in the study's folder
    assert list(root.rglob(TEACHER_FILE)) == [root / NAME / TEACHER_FILE]
    study = open_study(load_study(QUICKSTART, overrides(root, SPACE)), create=False)
    assert study.user_attrs["teacher_artifact"] == TEACHER_FILE  # inside the study folder
    assert study.user_attrs["teacher_sha256"] == (root / NAME / "teacher.pt.sha256").read_text().strip()
    assert study.user_attrs["teacher"]["iterations"] == 600


def test_report_is_written_and_self_contained(study_run):
    root, stdout, _ = study_run
    out = root / NAME
    assert json.loads(stdout)["report"] == str(out / "index.html")
    page = (out / "index.html").read_text()
    assert page and "data:image/png;base64," in page
    srcs = re.findall(r"""\b(?:src|href)=["']([^"']+)""", page)
    assert srcs and all(s.startswith("data:") for s in srcs), srcs  # no file next to it is needed
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} >= {"pareto_kl_vs_bytes_fp32.png", "hypervolume.png"}
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trials = pd.read_csv(out / "trials.csv")
    assert "on_front" in trials.columns and len(trials) == 4
    assert set(trials.loc[trials["on_front"], "number"]) == nondominated(trials, OBJECTIVES)
    summary = (out / "summary.md").read_text()
    assert summary.startswith("> Selected on the validation split") and f"# {NAME}" in summary
    assert "Pareto front" in summary and "KL test [nats]" in summary and "Monte-Carlo floor KL" in summary


def test_status_and_pareto_print_the_front(study_run, capsys, tmp_path):
    root = study_run[0]
    df = frame(root, SPACE)
    assert main(["status", QUICKSTART, *sets(root, SPACE)]) == 0
    out = capsys.readouterr().out
    assert "trials: complete 4" in out
    assert f"Pareto front: {int(df['on_front'].sum())} trials over kl (minimize)" in out
    assert "teacher: teacher_acc" in out

    assert main(["status", QUICKSTART, "--json", *sets(root, SPACE)]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["trials"] == {"COMPLETE": 4} and st["storage"].startswith("sqlite:///")

    csv = tmp_path / "front.csv"
    assert main(["pareto", QUICKSTART, "--objectives", "kl,bytes_fp32", "--csv", str(csv), *sets(root, SPACE)]) == 0
    out = capsys.readouterr().out
    front = nondominated(df, ["kl", "bytes_fp32"])
    lines = out.splitlines()
    assert lines[0].startswith("Selected on the validation split") and max(map(len, lines)) <= 120
    at = lines.index(f"Pareto front over kl (minimize), bytes_fp32 (minimize): {len(front)} trials")
    end = lines.index("", at) if "" in lines[at:] else len(lines)
    block = lines[at + 1 : end]  # the table's first block (it wraps at 120 columns)
    assert block[0].split()[:4] == ["number", "knee", "kl", "bytes_fp32"] and "test_kl" in out
    assert {int(line.split()[0]) for line in block[1:]} == front
    assert set(pd.read_csv(csv)["number"]) == front

    assert main(["pareto", QUICKSTART, "--objectives", "kl,nonsense", *sets(root, SPACE)]) == 2
    assert "nonsense" in one_error_line(capsys.readouterr().err)


def test_export_knee_and_best_then_evaluate(study_run, capsys, tmp_path):
    root = study_run[0]
    df = frame(root, SPACE).set_index("number")

    assert main(["export", QUICKSTART, "--knee", "--json", "--out", str(tmp_path / "knee"), *sets(root, SPACE)]) == 0
    knee = json.loads(capsys.readouterr().out)["trial"]
    assert bool(df.loc[knee, "on_front"])
    for f in ("student.pt", "student.pt2", "model_card.json"):
        assert (tmp_path / "knee" / f).stat().st_size > 0

    best = tmp_path / "best"
    assert main(["export", QUICKSTART, "--trial", "best:kl", "--json", "--out", str(best), *sets(root, SPACE)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["trial"] == int(df["kl"].astype(float).idxmin())
    assert {Path(p).name for p in res["files"].values()} >= {"student.pt", "student.pt2", "model_card.json"}
    card = json.loads((best / "model_card.json").read_text())
    assert card["study"]["name"] == NAME and card["study"]["trial_number"] == res["trial"]
    # integer metrics survive the DataFrame row (numpy int64) into the card
    assert card["metrics"]["params"] == int(df.loc[res["trial"], "params"])
    assert card["metrics"]["seed"] == int(df.loc[res["trial"], "seed"])

    assert main(["evaluate", str(best / "student.pt")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"student_acc\s+[01]\.\d{4}", out) and "n_test" in out

    teacher = root / NAME / TEACHER_FILE
    assert main(["evaluate", str(best / "student.pt"), "--json", "--teacher", str(teacher)]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert 0 <= rec["student_acc"] <= 1 and rec["n_test"] == 360
    # the exported student is the trial's student: same test-set KL to the same teacher
    assert rec["kl"] == pytest.approx(float(df.loc[res["trial"], "test_kl"]), rel=1e-4)  # evaluate: the test set

    assert main(["export", QUICKSTART, "--trial", "best:params", "--out", str(tmp_path / "x"),
                 *sets(root, SPACE)]) == 2
    assert "not an objective" in one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- 2. resume


def test_resume_adds_only_the_missing_trials(study_run, tmp_path, capsys):
    teacher = with_teacher(study_run, tmp_path)
    mtime = teacher.stat().st_mtime_ns
    args = ["run", QUICKSTART, "--no-progress", "--no-report", *sets(tmp_path, SPACE)]
    assert main([*args, "--n-trials", "2"]) == 0
    first = frame(tmp_path, SPACE, calibrated=False)  # trial-time records (calibration re-measures the front)
    assert main([*args, "--n-trials", "3"]) == 0
    assert main([*args, "--n-trials", "3"]) == 0  # already there: nothing to do
    capsys.readouterr()
    df = frame(tmp_path, SPACE, calibrated=False)
    assert list(df["number"]) == [0, 1, 2] and set(df["state"]) == {"COMPLETE"}
    cols = ["number", "state", "param_width_0", "param_width_1", "param_lambda_g", "kl", "bytes_fp32",
            "latency_ms", "checkpoint"]
    cols = [c for c in cols if c in first.columns]
    pd.testing.assert_frame_equal(df[cols].iloc[:2], first[cols])
    # the resumed sampler must not replay the first run's seed (trial 2 == trial 0 before the fix)
    params = [tuple(r) for r in df.filter(like="param_").itertuples(index=False)]
    assert len(set(params)) == 3, params
    assert teacher.stat().st_mtime_ns == mtime and list(tmp_path.rglob(TEACHER_FILE)) == [teacher]


def test_another_study_with_the_same_teacher_settings_copies_the_artifact(study_run, tmp_path, capsys):
    """A grid baseline next to its search (same seed, data, teacher): the chain is not sampled again."""
    teacher = with_teacher(study_run, tmp_path)
    other = ("name=grid_baseline", "search.sampler=grid", "search.space={mlp_width: [8, 16], lambda_g: [0.0]}",
             "student.widths=[16]")
    assert main(["run", QUICKSTART, "--no-progress", "--no-report", "--n-trials", "2", *sets(tmp_path, *other)]) == 0
    err = capsys.readouterr().err
    assert f"teacher: reusing {teacher}" in err
    copy = tmp_path / "grid_baseline" / TEACHER_FILE
    assert copy.read_bytes() == teacher.read_bytes()
    study = open_study(load_study(QUICKSTART, overrides(tmp_path, *other)), create=False)
    assert study.user_attrs["teacher_copied_from"] == str(teacher)
    assert study.user_attrs["teacher_artifact"] == TEACHER_FILE and copy.is_file()
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    # other teacher settings: nothing to reuse, the study samples its own chain
    seeded = ("name=seed_one", "seed=1")
    assert main(["run", QUICKSTART, "--no-progress", "--no-report", "--n-trials", "1", *sets(tmp_path, SPACE, *seeded)]) == 0
    assert "reusing" not in capsys.readouterr().err
    mine = open_study(load_study(QUICKSTART, overrides(tmp_path, SPACE, *seeded)), create=False)
    assert "teacher_copied_from" not in mine.user_attrs
    assert (tmp_path / "seed_one" / TEACHER_FILE).read_bytes() != teacher.read_bytes()


def test_teacher_made_with_other_settings_is_refused(study_run, tmp_path, capsys):
    with_teacher(study_run, tmp_path)
    rc = main(["run", QUICKSTART, "--no-progress", "--n-trials", "1",
               *sets(tmp_path, SPACE, "teacher.step_size=2.0e-4")])
    assert rc == 2
    assert "made with other data/teacher settings" in one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- 3. workers


@pytest.mark.slow
def test_two_workers_share_one_journal_and_one_teacher(study_run, tmp_path, capsys):
    teacher = with_teacher(study_run, tmp_path)
    args = ["run", QUICKSTART, "--workers", "2", "--n-trials", "4", "--no-progress", "--no-report", "--json",
            *sets(tmp_path, SPACE)]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["storage"].startswith("journal:///")
    out = tmp_path / NAME
    assert (out / "study.journal").is_file() and not (out / "study.db").exists()
    df = frame(tmp_path, SPACE)  # finds the journal by itself
    done = df[df["state"] == "COMPLETE"]
    assert len(done) >= 4 and df["number"].is_unique
    assert all((out / c).is_file() for c in done["checkpoint"])
    # the workers are seeded apart: no two trials with the same parameters
    params = [tuple(r) for r in done.filter(like="param_").itertuples(index=False)]
    assert len(set(params)) == len(params), params
    assert list(tmp_path.rglob(TEACHER_FILE)) == [teacher]
    assert main(["status", QUICKSTART, *sets(tmp_path, SPACE)]) == 0
    assert f"complete {len(done)}" in capsys.readouterr().out


# --------------------------------------------------------------------------- 3b. batch mode (ask and tell)


def test_batch_mode_trains_a_batch_together_and_fails_only_the_diverging_trial(study_run, tmp_path, capsys):
    teacher = with_teacher(study_run, tmp_path)
    study = open_study(load_study(QUICKSTART, overrides(tmp_path, LR_SPACE)))
    study.enqueue_trial({"lr": 0.003})
    study.enqueue_trial({"lr": 1.0e12})
    args = ["run", QUICKSTART, "--batch", "3", "--no-progress", "--no-report", *sets(tmp_path, LR_SPACE)]
    assert main([*args, "--n-trials", "3"]) == 0
    capsys.readouterr()
    df = frame(tmp_path, LR_SPACE).set_index("number")
    assert list(df["state"]) == ["COMPLETE", "FAIL", "COMPLETE"]  # 3 tried, as study.optimize(n_trials=3)
    assert "diverged" in df.loc[1, "fail_reason"]
    for n in (0, 2):
        assert df.loc[n, "batch_students"] == 3 and (tmp_path / NAME / df.loc[n, "checkpoint"]).is_file()
        assert df.loc[n, "kl"] >= 0 and df.loc[n, "student_steps"] == 60
    assert df["seed"].is_unique
    # resuming in batch mode adds only what is missing (one COMPLETE trial), and reuses the teacher
    study.enqueue_trial({"lr": 0.003})  # (the space's other lr diverges)
    assert main([*args, "--n-trials", "3"]) == 0
    capsys.readouterr()
    df = frame(tmp_path, LR_SPACE)
    assert list(df["state"]) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert df.loc[3, "batch_students"] == 1
    assert list(tmp_path.rglob(TEACHER_FILE)) == [teacher]


def test_batch_mode_grid_runs_each_point_once(study_run, tmp_path, capsys):
    with_teacher(study_run, tmp_path)
    grid = ("search.sampler=grid", "search.space={mlp_width: [8, 16, 24], lambda_g: [0.0]}",
            "student.widths=[16]")
    rc = main(["run", QUICKSTART, "--batch", "2", "--n-trials", "10", "--no-progress", "--no-report", "--json",
               *sets(tmp_path, *grid)])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["trials"] == {"COMPLETE": 3}
    df = frame(tmp_path, *grid)
    assert sorted(df["param_width_0"]) == [8, 16, 24]
    assert sorted(df["batch_students"]) == [1, 2, 2]


def test_batch_mode_keeps_asked_trials_alive_on_a_heartbeat_storage(tmp_path):
    """Ask-and-tell has no heartbeat of its own: the batch's heartbeat thread keeps its trials fresh."""
    from optuna.storages import RDBStorage, fail_stale_trials

    from gped_search.search.storage import Heartbeat, trial_ids

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        storage = RDBStorage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=1, grace_period=2)
        study = optuna.create_study(storage=storage)
        a, b = study.ask(), study.ask()
        with Heartbeat(study, trial_ids([a, b])):
            # past the grace period (2 s) the trials would be stale without the heartbeat: check until then
            start = time.monotonic()
            while time.monotonic() - start < 3.0:
                fail_stale_trials(study)
                assert {t.state for t in study.get_trials()} == {TrialState.RUNNING}
                time.sleep(0.25)
        # without it they go stale once the grace period has passed: wait for that, not a fixed time
        deadline = time.monotonic() + 30
        while {t.state for t in study.get_trials()} != {TrialState.FAIL} and time.monotonic() < deadline:
            time.sleep(0.25)
            fail_stale_trials(study)
        assert {t.state for t in study.get_trials()} == {TrialState.FAIL}


# --------------------------------------------------------------------------- 4. failing trials


def test_diverging_trial_fails_and_the_study_goes_on(study_run, tmp_path, capsys):
    with_teacher(study_run, tmp_path)
    study = open_study(load_study(QUICKSTART, overrides(tmp_path, LR_SPACE)))
    study.enqueue_trial({"lr": 1.0e12})
    study.enqueue_trial({"lr": 0.003})
    assert main(["run", QUICKSTART, "--n-trials", "2", "--no-progress", *sets(tmp_path, LR_SPACE)]) == 0
    capsys.readouterr()
    df = frame(tmp_path, LR_SPACE).set_index("number")
    assert list(df["state"]) == ["FAIL", "COMPLETE"]
    assert "diverged" in df.loc[0, "fail_reason"] and pd.isna(df.loc[1, "fail_reason"])
    assert not (tmp_path / NAME / "trials" / "00000").exists()
    assert "Failed trials" in (tmp_path / NAME / "summary.md").read_text()

    rc = main(["export", QUICKSTART, "--trial", "0", "--out", str(tmp_path / "x"), *sets(tmp_path, LR_SPACE)])
    assert rc == 2
    line = one_error_line(capsys.readouterr().err)
    assert "trial 0 is FAIL" in line and "diverged" in line
    assert not (tmp_path / "x").exists()

    rc = main(["export", QUICKSTART, "--trial", "7", "--out", str(tmp_path / "x"), *sets(tmp_path, LR_SPACE)])
    assert rc == 2
    assert "trial 7 does not exist" in one_error_line(capsys.readouterr().err)
    rc = main(["export", QUICKSTART, "--trial", "seven", "--out", str(tmp_path / "x"), *sets(tmp_path, LR_SPACE)])
    assert rc == 2
    one_error_line(capsys.readouterr().err)


def test_all_trials_diverging_still_exits_0_with_an_empty_front(study_run, tmp_path, capsys):
    with_teacher(study_run, tmp_path)
    s = sets(tmp_path, SPACE, "distill.lr=1.0e+12")
    assert main(["run", QUICKSTART, "--n-trials", "2", "--no-progress", *s]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in out[:2]] == [["trial", "0", "fail"], ["trial", "1", "fail"]]
    assert "DivergenceError" in out[0] or "diverg" in out[0].lower(), out[0]
    assert out[2].startswith("study quickstart: 2 fail; 0 on the Pareto front")
    df = frame(tmp_path, SPACE, "distill.lr=1.0e+12")
    assert list(df["state"]) == ["FAIL", "FAIL"] and df["fail_reason"].str.contains("diverged").all()
    assert (tmp_path / NAME / "index.html").stat().st_size > 0
    assert main(["pareto", QUICKSTART, *s]) == 0
    assert "empty" in capsys.readouterr().out
    assert main(["export", QUICKSTART, "--knee", "--out", str(tmp_path / "x"), *s]) == 2
    assert "no complete trial" in one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- 5. bad study files


def _study_text(edit):
    text = Path(QUICKSTART).read_text()
    return edit(text)


BAD_FILES = {
    "unknown top-level key": (lambda t: t + "\nbogus_section: 1\n", [], "unknown key 'bogus_section'"),
    "unknown space parameter": (lambda t: t, ["search.space={width: [4, 8]}"], "unknown parameter"),
    "nonsense objective": (lambda t: t, ["search.objectives={happiness: maximize}"], "unknown metric"),
    "bad direction": (lambda t: t, ["search.objectives={kl: sideways}"], "minimize or maximize"),
    "empty choices": (lambda t: t, ["search.space={lambda_g: []}"], "empty list of choices"),
    "wrong type": (lambda t: t.replace("iterations: 10000", "iterations: lots"), [], "teacher.iterations"),
    "wrong override type": (lambda t: t, ["distill.steps=many"], "distill.steps"),
    "range for a family": (lambda t: t, ["search.space={family: {low: 1, high: 2}}"], "family"),
    "malformed yaml": (lambda t: t.replace("name: quickstart", "name: [quickstart"), [], "malformed YAML"),
    "top level is a list": (lambda t: "- 1\n- 2\n", [], "mapping"),
    "override without =": (lambda t: t, ["teacher.iterations"], "key.sub=value"),
    "batch of zero": (lambda t: t, ["search.batch=0"], "search.batch must be >= 1"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_study_file_is_one_error_line(case, tmp_path, capsys):
    edit, extra, words = BAD_FILES[case]
    path = tmp_path / "study.yaml"
    path.write_text(_study_text(edit))
    report = tmp_path / "reports"
    argv = ["run", str(path), "--no-progress", "--set", f"report_dir={report}"]
    argv += [a for o in extra for a in ("--set", o)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    line = one_error_line(captured.err)
    assert words in line, line
    assert captured.out == ""
    assert not report.exists()  # nothing was started


def test_batch_flag_of_zero_is_one_error_line(tmp_path, capsys):
    assert main(["run", QUICKSTART, "--batch", "0", "--no-progress", "--set", f"report_dir={tmp_path}"]) == 2
    assert "search.batch must be >= 1" in one_error_line(capsys.readouterr().err)
    assert not any(tmp_path.iterdir())


def test_missing_study_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml"), "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "study file not found" in line and "nope.yaml" in line


def test_status_of_a_study_never_run_creates_nothing(tmp_path, capsys):
    assert main(["status", QUICKSTART, "--set", f"report_dir={tmp_path}"]) == 2
    assert "run `gped-search run` first" in one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []  # no empty study.db left to shadow a later study.journal


# --------------------------------------------------------------------------- 6. dead workers


def test_fail_dead_trials_fails_and_requeues_a_dead_workers_trial(tmp_path):
    cfg = load_study(QUICKSTART, [f"report_dir={tmp_path}"])
    url = f"journal:///{tmp_path / 'dead.journal'}"
    study = open_study(cfg, url)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host = socket.gethostname()
    dists = {"width_0": IntDistribution(4, 48), "lambda_g": FloatDistribution(0.0, 0.01)}

    dead = study.ask(dists)
    dead.set_user_attr("worker", f"{host}:{proc.pid}")
    alive = study.ask(dists)
    alive.set_user_attr("worker", f"{host}:{os.getppid()}")  # pytest's parent: still running
    elsewhere = study.ask(dists)
    elsewhere.set_user_attr("worker", f"another-{host}:{proc.pid}")  # not ours to judge
    mine = study.ask(dists)
    mine.set_user_attr("worker", f"{host}:{os.getpid()}")

    # another process (a second worker) opening the same journal sees and fails it
    other = optuna.load_study(study_name=cfg.name, storage=open_study(cfg, url)._storage)
    assert fail_dead_trials(other) == [dead.number]
    trials = {t.number: t for t in open_study(cfg, url, create=False).get_trials()}
    assert trials[dead.number].state == TrialState.FAIL
    assert str(proc.pid) in trials[dead.number].user_attrs["fail_reason"]
    for t in (alive, elsewhere, mine):
        assert trials[t.number].state == TrialState.RUNNING
    waiting = [t for t in trials.values() if t.state == TrialState.WAITING]
    assert len(waiting) == 1
    assert waiting[0].user_attrs["retry_of"] == dead.number
    assert waiting[0].system_attrs["fixed_params"] == dead.params
    assert fail_dead_trials(other) == []  # done once, not re-queued again


# --------------------------------------------------------------------------- 7. storage passwords


@pytest.mark.parametrize("url, secret", [
    ("postgresql://u:secret@h/db", "secret"),
    ("postgresql+psycopg2://alice:s3cr3t:x@db.example.com:5432/search", "s3cr3t:x"),
    ("mysql+pymysql://u:p%40ss@h:3306/db", "p%40ss"),
    ("postgresql://:secret@h/db", "secret"),  # empty user name
    ("postgresql://a@b:secret@h/db", "secret"),  # '@' in the user name, as SQLAlchemy parses it
])
def test_mask_url_hides_the_password(url, secret):
    masked = mask_url(url)
    assert secret not in masked and ":***@" in masked
    assert masked.split("@")[-1] == url.split("@")[-1]  # host and database still shown
    assert mask_url(f"cannot open storage {url}: refused") == f"cannot open storage {masked}: refused"


@pytest.mark.parametrize("url", ["sqlite:////tmp/x/study.db", "journal:////tmp/a:b@c.journal",
                                 "postgresql://u@h/db"])
def test_mask_url_leaves_urls_without_password(url):
    assert mask_url(url) == url


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg2"])
def test_unreachable_database_error_hides_the_password(scheme, tmp_path, capsys):
    if scheme.endswith("psycopg2"):
        pytest.importorskip("psycopg2")
    url = f"{scheme}://alice:hunter2pw@127.0.0.1:1/search"  # port 1: refused at once
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(["status", QUICKSTART, "--storage", url, "--set", f"report_dir={tmp_path}"])
    assert rc == 2
    err = capsys.readouterr().err
    line = one_error_line(err)
    assert "hunter2pw" not in err and f"{scheme}://alice:***@127.0.0.1:1/search" in line
    assert "cannot open storage" in line
    # warnings would reach the user's terminal as extra stderr lines
    assert not [w for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]


def test_teacher_seconds_saved_counts_overlapping_trials_once():
    """Trials of one batch (or of parallel workers) overlap: their wall time is the union."""
    from datetime import datetime, timedelta

    from optuna.distributions import FloatDistribution as Float

    from gped_search.search import teacher_seconds_saved

    study = optuna.create_study(directions=["minimize"])
    study.set_user_attr("teacher", {"seconds": 100.0})
    t0 = datetime(2026, 1, 1)
    for a, b in [(0, 10), (0, 10), (5, 12), (20, 25)]:  # union: [0, 12] + [20, 25] = 17 s
        study.add_trial(optuna.trial.FrozenTrial(
            number=0, state=TrialState.COMPLETE, value=1.0, datetime_start=t0 + timedelta(seconds=a),
            datetime_complete=t0 + timedelta(seconds=b), params={"x": 0.0}, distributions={"x": Float(0, 1)},
            user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=0))
    got = teacher_seconds_saved(study)
    assert got["trial_seconds"] == pytest.approx(17.0) and got["trial_seconds_sum"] == pytest.approx(32.0)
    assert got["saved_seconds"] == pytest.approx(300.0)
    assert got["saved_fraction"] == pytest.approx(300.0 / (400.0 + 17.0))


def test_threads_flag_sets_torch_threads(study_run, tmp_path, capsys):
    with_teacher(study_run, tmp_path)
    try:
        assert main(["run", QUICKSTART, "--threads", "2", "--n-trials", "1", "--no-progress", "--no-report",
                     *sets(tmp_path, SPACE)]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    with pytest.raises(SystemExit) as e:
        main(["run", QUICKSTART, "--threads", "0"])
    assert e.value.code == 2 and "--threads: '0': give a whole number >= 1" in capsys.readouterr().err


def test_front_latency_is_recalibrated_together(study_run):
    """Issue 14: at the end of a study the front's students are re-measured in one interleaved pass; the
    frame reports those figures (trial-time ones kept) and on_front treats overlaps as ties."""
    root, _, rc = study_run
    assert rc == 0
    study = open_study(load_study(QUICKSTART, overrides(root, SPACE)), create=False)
    cal = study.user_attrs["latency_calibration"]
    raw = trials_frame(study, calibrated=False)
    assert {int(k) for k in cal} == set(raw.loc[raw["on_front"], "number"])
    df = trials_frame(study)
    for k, (med, p10, p90) in cal.items():
        row = df[df["number"] == int(k)].iloc[0]
        assert row["latency_ms"] == med and row["latency_calibrated"] and p10 <= med <= p90
        assert row["latency_trial_ms"] == raw[raw["number"] == int(k)].iloc[0]["latency_ms"]
    assert set(df.loc[df["on_front"], "number"]) == nondominated(df, OBJECTIVES)
