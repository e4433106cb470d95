"""Trials fail loudly on bugs and quietly on expected trouble (issue 18): a TypeError inside a trial
keeps its traceback (trial error.log, study.log, the logger); a diverging student is one line."""

from __future__ import annotations

import optuna
from conftest import QUICKSTART, tiny_sets

from gped_search.cli import main
from gped_search.config import load_study
from gped_search.search import open_study
from gped_search.search import trials as trials_mod


def test_an_unexpected_error_fails_the_trial_with_its_traceback_kept(tmp_path, monkeypatch, capsys):
    def broken(*a, **k):
        raise TypeError("a refactoring bug")

    monkeypatch.setattr(trials_mod, "train_trial", broken)
    s = tiny_sets(tmp_path, "search.batch=1")
    assert main(["run", QUICKSTART, "--n-trials", "1", "--no-progress", "--no-report", "--json", *s]) == 0
    cfg = load_study(QUICKSTART, [s[i + 1] for i in range(0, len(s), 2)])
    t = open_study(cfg, create=False).trials[0]
    assert t.state == optuna.trial.TrialState.FAIL
    reason = t.user_attrs["fail_reason"]
    assert reason.startswith("unexpected TypeError: a refactoring bug (traceback in trials/00000/error.log)")
    log = (cfg.out_dir / "trials" / "00000" / "error.log").read_text()
    assert log.startswith("Traceback") and "in broken" in log and "TypeError: a refactoring bug" in log
    assert "TypeError: a refactoring bug" in (cfg.out_dir / "study.log").read_text()
    err = capsys.readouterr().err
    assert "trial 0 failed unexpectedly" in err and "Traceback (most recent call last)" in err


def test_optuna_verbosity_is_restored_after_a_run(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        assert main(["run", QUICKSTART, "--n-trials", "1", "--no-progress", "--no-report", "--json",
                     *tiny_sets(tmp_path)]) == 0
        assert optuna.logging.get_verbosity() == optuna.logging.INFO  # no global mute
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_a_diverging_student_is_one_line_without_a_traceback_file(tmp_path, capsys):
    s = tiny_sets(tmp_path, "distill.lr=1.0e+12", "search.space={lr: [1.0e+12]}", "search.sampler=random")
    assert main(["run", QUICKSTART, "--n-trials", "1", "--no-progress", "--no-report", "--json", *s]) == 0
    err = capsys.readouterr().err
    assert "trial 0 failed: DivergenceError" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("error.log"))
