"""A study shared by several worker processes through a PostgreSQL server (the cluster set-up).

A private PostgreSQL 15 server is started for the module (see ``pg.postgres_cluster``; skipped with
the reason where the binaries, psycopg2 or initdb are unavailable). Three ``gped-search run``
processes start at once against the same URL and the same report folder, as three cluster nodes
would: they race for the study and the teacher, then share the trials.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pg import PASSWORD, gped, postgres_cluster, worker_env, write_study

pytestmark = pytest.mark.system  # CI runs these as its second step (./dev test runs both)

WORKERS = 3
N_TRIALS = 6


@pytest.fixture(scope="module")
def pg_url():
    with postgres_cluster() as url:
        yield url


_FRONT = textwrap.dedent("""
    import json, sys
    import optuna
    from gped_search.config import load_study
    from gped_search.search import open_study, trials_frame
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cfg = load_study(sys.argv[1])
    df = trials_frame(open_study(cfg, sys.argv[2], create=False))
    front = df[df["on_front"]].sort_values("number")
    print(json.dumps([[int(r.number), float(r.kl), float(r.bytes_fp32)] for r in front.itertuples()]))
""")


def _front_here(study_file: Path, url: str) -> list:
    from gped_search.config import load_study
    from gped_search.search import open_study, trials_frame

    df = trials_frame(open_study(load_study(study_file), url, create=False))
    front = df[df["on_front"]].sort_values("number")
    return [[int(r.number), float(r.kl), float(r.bytes_fp32)] for r in front.itertuples()]


def test_three_workers_share_one_postgres_study(pg_url, tmp_path):
    import optuna
    from optuna.trial import TrialState

    t0 = time.perf_counter()
    reports = tmp_path / "reports"
    study_file = write_study(tmp_path / "pg.yaml", "pg_study", reports, n_trials=N_TRIALS)
    cmd = [*gped(), "run", str(study_file), "--storage", pg_url, "--n-trials", str(N_TRIALS),
           "--no-progress", "--no-report", "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=worker_env())
             for _ in range(WORKERS)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, f"worker exited {p.returncode}:\n{err[-3000:]}"
        status = json.loads(out)
        assert "***" in status["storage"] and PASSWORD not in out + err  # the password never shows

    storage = optuna.storages.RDBStorage(pg_url)
    study = optuna.load_study(study_name="pg_study", storage=storage)
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    states = sorted({t.state.name for t in trials})
    # Each worker stops once the study holds N complete trials; workers that were mid-trial at that
    # moment finish theirs, so up to WORKERS - 1 extra (documented in run_study).
    assert N_TRIALS <= len(complete) <= N_TRIALS + WORKERS - 1, states
    assert states == ["COMPLETE"], [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # unique, no gaps
    workers = {t.user_attrs["worker"] for t in complete}
    ckpts = [t.user_attrs["checkpoint"] for t in complete]
    assert len(set(ckpts)) == len(ckpts) and all((reports / "pg_study" / c).is_file() for c in ckpts)
    assert not any(Path(c).is_absolute() for c in ckpts)  # relative to the study folder: it can move

    # One teacher for the whole study: one artifact (+ checksum and lock), no leftovers.
    out = reports / "pg_study"
    teacher_files = sorted(p.name for p in out.iterdir() if "teacher" in p.name)
    assert teacher_files == ["teacher.chain", "teacher.pt", "teacher.pt.key", "teacher.pt.lock", "teacher.pt.sha256"]
    from gped_search.files import sha256_of

    assert study.user_attrs["teacher_sha256"] == sha256_of(out / "teacher.pt") == \
        (out / "teacher.pt.sha256").read_text().strip()

    # The Pareto front as a fresh process reads it back equals the one read here.
    here = _front_here(study_file, pg_url)
    fresh = subprocess.run([sys.executable, "-c", _FRONT, str(study_file), pg_url], capture_output=True,
                           text=True, env=worker_env(), timeout=120)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert json.loads(fresh.stdout) == here and here
    elapsed = time.perf_counter() - t0
    print(f"\n[pg] workers={WORKERS} target={N_TRIALS} complete={len(complete)} trials={len(trials)} "
          f"distinct worker pids={len(workers)} front={len(here)} wall={elapsed:.1f}s")


def test_status_masks_the_password_and_bad_password_is_one_line(pg_url, tmp_path, capsys):
    from gped_search.cli import main

    study_file = write_study(tmp_path / "s.yaml", "nobody_ran_this", tmp_path / "reports")
    bad = pg_url.replace(PASSWORD, "wrong-password")
    assert main(["status", str(study_file), "--storage", bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gped-search: error: ")
    assert "wrong-password" not in err and "***" in err, err
    assert main(["status", str(study_file), "--storage", pg_url]) == 2  # the server is fine, no such study
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no study 'nobody_ran_this'" in err and PASSWORD not in err, err
