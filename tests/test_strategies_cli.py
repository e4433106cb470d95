"""search.strategy supernet and halving through the CLI on the tiny quickstart: records, resumption, the
front, and one line for settings a strategy cannot run with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import QUICKSTART, cli, one_error_line, tiny_sets

ROOT = Path(__file__).resolve().parents[1]


def _study(root: Path):
    import optuna

    from gped_search.config import load_study
    from gped_search.search.storage import open_study

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return open_study(load_study(QUICKSTART, [f"report_dir={root}", "device=cpu"]), create=False)


def _pruned_read_only(db: Path) -> list[int]:
    """Numbers of the PRUNED trials, read with a read-only SQLite connection: opening the study through
    Optuna while the worker is still creating its tables races it (both run CREATE TABLE), which can
    crash the worker; a read-only query cannot."""
    import sqlite3

    if not db.is_file():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return [r[0] for r in con.execute("SELECT number FROM trials WHERE state = 'PRUNED'")]
        finally:
            con.close()
    except sqlite3.Error:  # the tables are not there yet
        return []


def test_supernet_study_runs_its_front_as_trials_and_resumes_without_retraining(tmp_path):
    sets = tiny_sets(tmp_path, "device=cpu", "search.strategy=supernet", "search.supernet.samples=40",
                     "search.supernet.check=3", "search.batch=2")
    rc, out, err = cli(["run", QUICKSTART, "--n-trials", "4", "--no-progress", "--threads", "1", *sets])
    assert rc == 0, err
    st = _study(tmp_path)
    done = [t for t in st.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4 and len(st.trials) == 4
    assert sorted(t.user_attrs["supernet_pick"] for t in done) == [0, 1, 2, 3]
    assert all(t.user_attrs["origin"] == "supernet" and t.user_attrs["student_steps"] == 12 for t in done)
    sn = st.user_attrs["supernet"]
    assert sn["configurations"] == 40 and sn["chosen"] == 4 and sn["seconds"] > 0
    assert not any(f["loaded"] for f in sn["families"].values())
    chk = st.user_attrs["supernet_check"]
    assert chk["n"] == 3 and -1 <= chk["tau"] <= 1
    scores = (tmp_path / "quickstart" / "supernet" / "scores.csv").read_text().splitlines()
    assert len(scores) == 41
    # a re-run asking for more trials loads the supernets and its scores, and runs only the new picks
    rc, _, err = cli(["run", QUICKSTART, "--n-trials", "6", "--no-progress", "--threads", "1", *sets])
    assert rc == 0, err
    st = _study(tmp_path)
    assert all(f["loaded"] for f in st.user_attrs["supernet"]["families"].values())
    picks = sorted(t.user_attrs.get("supernet_pick") for t in st.trials)
    assert picks == [0, 1, 2, 3, 4, 5] and all(t.state.name == "COMPLETE" for t in st.trials)


def test_halving_study_stops_trials_early_and_keeps_them_off_the_front(tmp_path):
    sets = tiny_sets(tmp_path, "device=cpu", "search.strategy=halving", "distill.steps=90", "search.halving.rungs=2")
    rc, out, err = cli(["run", QUICKSTART, "--n-trials", "9", "--no-progress", "--threads", "1", *sets])
    assert rc == 0, err
    st = _study(tmp_path)
    stopped = [t for t in st.trials if t.state.name == "PRUNED"]
    done = [t for t in st.trials if t.state.name == "COMPLETE"]
    assert len(st.trials) == 9 and stopped and done and len(stopped) + len(done) == 9
    for t in stopped:
        assert t.user_attrs["stopped_rung"] in (0, 1) and t.user_attrs["stopped_step"] in (10, 30)
        assert t.intermediate_values == {} and t.user_attrs["curve"]  # never intermediate values (TPE)
        assert t.user_attrs["train_seconds"] > 0 and t.user_attrs["rung_kl"] > 0
    assert all(t.user_attrs["student_steps"] == 90 for t in done)
    from gped_search.search.results import trials_frame

    df = trials_frame(st)
    assert not df[df["state"] == "PRUNED"]["on_front"].any()
    rc, out, _ = cli(["status", QUICKSTART, *sets])
    assert rc == 0 and ("stopped" in out.lower() or "pruned" in out.lower())
    knee = next(line for line in out.splitlines() if line.startswith("knee"))
    assert int(knee.split("trial ")[1].split()[0]) in {t.number for t in done}  # never a stopped trial
    rc, _, err = cli(["report", QUICKSTART, *sets])
    assert rc == 0, err
    md = (tmp_path / "quickstart" / "summary.md").read_text()
    assert "Stopped early (successive halving" in md and "Successive halving stopped" in md
    # nothing left to run: a re-run trains nothing
    rc, _, err = cli(["run", QUICKSTART, "--n-trials", "9", "--no-progress", "--threads", "1", *sets])
    assert rc == 0 and len(_study(tmp_path).trials) == 9


@pytest.mark.parametrize(
    "extra, says",
    [
        (["search.strategy=halving", "search.halving.eta=1"], "search.halving.eta must be >= 2"),
        (["search.strategy=halving", "distill.steps=10", "search.halving.rungs=3"], "search.halving.rungs: 3 rungs"),
        (["search.strategy=supernet", "search.sampler=grid", "search.space={mlp_width: [8, 16]}"], "search.sampler: grid"),
        (["search.strategy=supernet", "search.space={lambda_g: [0, 0.001]}"], "no architecture to slice"),
        (["search.strategy=supernet", "search.objectives={kl: minimize, ood_auroc: maximize}"],
         "search.objectives.ood_auroc"),
        (["search.strategy=trial"], "search.strategy must be one of"),
        (["search.supernet.check=2"], "search.supernet.check"),
    ],
)
def test_settings_a_strategy_cannot_run_with_are_one_line_before_any_work(tmp_path, extra, says):
    rc, _, err = cli(["run", QUICKSTART, "--no-progress", *tiny_sets(tmp_path, "device=cpu", *extra)])
    assert rc != 0
    assert says in one_error_line(err)
    assert not (tmp_path / "quickstart" / "teacher.pt").exists()


@pytest.mark.system
def test_a_sigkilled_halving_worker_loses_no_finished_rung_and_the_study_resumes(tmp_path):
    """Kill a worker once trials of its bracket were stopped at a rung; those stay recorded, the re-run
    fails the dead worker's running trials and finishes the study."""
    sets = tiny_sets(tmp_path, "device=cpu", "search.strategy=halving", "distill.steps=3000",
                     "search.halving.rungs=2")
    cmd = [sys.executable, "-m", "gped_search.cli", "run", QUICKSTART, "--n-trials", "9", "--no-progress",
           "--threads", "1", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    db = tmp_path / "quickstart" / "study.db"
    deadline = time.monotonic() + 600
    stopped: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None and not stopped:
        time.sleep(1)
        stopped = _pruned_read_only(db)
    tail = log.read_text(errors="replace")[-2000:]
    assert stopped, f"no trial was stopped at a rung (worker exit {proc.poll()}); its output ends:\n{tail}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    print(f"killed after trials {stopped} were stopped")
    before = {t.number: t.user_attrs["stopped_rung"] for t in _study(tmp_path).trials if t.state.name == "PRUNED"}
    rc, _, err = cli(["run", QUICKSTART, "--n-trials", "9", "--no-progress", "--threads", "1",
                      *tiny_sets(tmp_path, "device=cpu", "search.strategy=halving", "distill.steps=3000",
                                 "search.halving.rungs=2")])
    assert rc == 0, err
    st = _study(tmp_path)
    after = {t.number: t.user_attrs["stopped_rung"] for t in st.trials if t.state.name == "PRUNED"}
    assert before.items() <= after.items()  # every finished rung is still there
    finished = [t for t in st.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 9 and any(t.state.name == "COMPLETE" for t in st.trials)
    assert all(t.state.name != "RUNNING" for t in st.trials)
