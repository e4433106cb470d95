"""Faults: workers killed mid-trial or mid-teacher, a corrupt teacher artifact, an unwritable report folder.

Workers are real ``gped-search run`` processes killed with SIGKILL (no clean-up code runs). Recovery:

* server storages (PostgreSQL here): Optuna's heartbeat fails a trial whose worker went silent for
  the grace period and ``RetryHeartbeatStaleTrialCallback`` enqueues its parameters again; the test
  shortens both through ``GPED_HEARTBEAT_INTERVAL`` / ``GPED_GRACE_PERIOD``;
* file storages (SQLite, journal) on one machine: the next worker fails RUNNING trials whose worker
  pid no longer exists and enqueues them again (``fail_dead_trials``).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pg import gped, kill, postgres_cluster, wait_for, worker_env, write_study

pytestmark = pytest.mark.system  # CI runs these as its second step (./dev test runs both)

HOST = socket.gethostname()
RUN = ("--no-progress", "--no-report")


@pytest.fixture(scope="module")
def pg_url():
    with postgres_cluster() as url:
        yield url


@pytest.fixture(scope="module")
def good_teacher(tmp_path_factory):
    """A valid teacher artifact of the tiny study (every study here shares its teacher settings)."""
    import torch

    from gped_search.config import load_study
    from gped_search.engine import prepare
    from gped_search.search import ensure_teacher

    d = tmp_path_factory.mktemp("teacher")
    cfg = load_study(write_study(d / "t.yaml", "t", d / "reports"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ensure_teacher(prepare(cfg), cfg.out_dir, progress=False)
    finally:
        torch.set_num_threads(threads)
    return cfg.out_dir / "teacher.pt"


def _place_teacher(good: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("teacher.pt", "teacher.pt.sha256"):
        shutil.copy(good.with_name(name), out / name)


_STORAGES: dict = {}


def _study(url: str, name: str):
    """The study as a plain reader sees it (no heartbeat of its own), or None before it exists."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if url not in _STORAGES:
        _STORAGES[url] = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=_STORAGES[url])
    except KeyError:
        return None


def _running_trial_of(url: str, name: str, pid: int):
    """The trial worker ``pid`` is running (parameters sampled), else None."""
    from optuna.trial import TrialState

    study = _study(url, name)
    if study is None:
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("worker") == f"{HOST}:{pid}" and t.params:
            return t
    return None


def _kill_mid_trial(proc: subprocess.Popen, url: str, name: str, timeout: float = 240):
    def ready():
        if proc.poll() is not None:
            pytest.fail(f"worker exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        return _running_trial_of(url, name, proc.pid)

    t = wait_for(ready, timeout, what="a running trial")
    time.sleep(0.5)
    kill(proc)
    from optuna.trial import TrialState

    victim = _study(url, name).get_trials(deepcopy=False)[t.number]
    assert victim.state == TrialState.RUNNING, "the trial finished before the kill; make trials longer"
    return victim


def _losses(study, target: int) -> dict:
    """Complete trials, and trials lost: failed without a completed retry, or left running / waiting."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    retried = {t.system_attrs.get("failed_trial", t.user_attrs.get("retry_of")) for t in complete}
    failed = [t.number for t in trials if t.state == TrialState.FAIL]
    lost = [n for n in failed if n not in retried]
    hanging = [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    return {"complete": len(complete), "failed": failed, "lost": lost + hanging, "target": target}


# --------------------------------------------------------------------------- (a) a worker killed mid-trial

def test_worker_killed_mid_trial_postgres_heartbeat_retries(pg_url, tmp_path, good_teacher):
    """SIGKILL a worker in the middle of a trial; the heartbeat fails it and it is run again."""
    from optuna.trial import TrialState

    t0 = time.perf_counter()
    name, target = "hb", 3
    study_file = write_study(tmp_path / "hb.yaml", name, tmp_path / "reports", n_trials=target, steps=600)
    _place_teacher(good_teacher, tmp_path / "reports" / name)
    env = worker_env(GPED_HEARTBEAT_INTERVAL="1", GPED_GRACE_PERIOD="3")
    cmd = [*gped(), "run", str(study_file), "--storage", pg_url, *RUN]
    a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    victim = _kill_mid_trial(a, pg_url, name)
    # As if the worker had run on another machine: the dead-pid check cannot see it, only the heartbeat.
    _study(pg_url, name)._storage.set_trial_user_attr(victim._trial_id, "worker", "node-b.cluster:4242")

    b = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert b.returncode == 0, b.stderr[-3000:]
    study = _study(pg_url, name)
    trials = study.get_trials(deepcopy=False)
    assert trials[victim.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == victim.params
    got = _losses(study, target)
    assert got["complete"] >= target and got["lost"] == [], got
    print(f"\n[faults:heartbeat] kills=1 survived=1 trials_lost={len(got['lost'])} complete={got['complete']} "
          f"failed={got['failed']} retry=trial {retries[0].number} wall={time.perf_counter() - t0:.1f}s")


def test_batch_worker_killed_mid_batch_postgres_heartbeat_retries_every_trial(pg_url, tmp_path, good_teacher):
    """Ask-and-tell batch mode keeps heartbeats by hand: killing it mid-batch loses none of its trials."""
    from optuna.trial import TrialState

    t0 = time.perf_counter()
    name, target, batch = "hb_batch", 3, 3
    study_file = write_study(tmp_path / "hbb.yaml", name, tmp_path / "reports", n_trials=target, steps=600)
    _place_teacher(good_teacher, tmp_path / "reports" / name)
    env = worker_env(GPED_HEARTBEAT_INTERVAL="1", GPED_GRACE_PERIOD="3")
    cmd = [*gped(), "run", str(study_file), "--storage", pg_url, "--batch", str(batch), *RUN]
    a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _kill_mid_trial(a, pg_url, name)
    victims = _study(pg_url, name).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert len(victims) == batch
    for v in victims:  # as if on another machine: only the heartbeat can tell
        _study(pg_url, name)._storage.set_trial_user_attr(v._trial_id, "worker", "node-b.cluster:4242")
    time.sleep(4)  # the node comes back after the grace period

    b = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert b.returncode == 0, b.stderr[-3000:]
    trials = _study(pg_url, name).get_trials(deepcopy=False)
    for v in victims:
        assert trials[v.number].state == TrialState.FAIL
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == v.number]
        assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == v.params
        assert retries[0].user_attrs["batch_students"] == batch
    got = _losses(_study(pg_url, name), target)
    assert got["complete"] >= target and got["lost"] == [], got
    print(f"\n[faults:batch-heartbeat] kills=1 batch={batch} trials_lost={len(got['lost'])} "
          f"complete={got['complete']} failed={got['failed']} wall={time.perf_counter() - t0:.1f}s")


def test_worker_killed_mid_trial_sqlite_dead_pid_retries(tmp_path, good_teacher):
    """Same on one machine with the default SQLite file: the next run fails the dead worker's trial."""
    from optuna.trial import TrialState

    t0 = time.perf_counter()
    name, target = "local", 2
    reports = tmp_path / "reports"
    study_file = write_study(tmp_path / "local.yaml", name, reports, n_trials=target, steps=600)
    _place_teacher(good_teacher, reports / name)
    url = f"sqlite:///{(reports / name / 'study.db').resolve()}"
    cmd = [*gped(), "run", str(study_file), *RUN]
    a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=worker_env())
    victim = _kill_mid_trial(a, url, name)

    b = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(), timeout=400)
    assert b.returncode == 0, b.stderr[-3000:]
    study = _study(url, name)
    trials = study.get_trials(deepcopy=False)
    assert trials[victim.number].state == TrialState.FAIL
    assert "died during the trial" in trials[victim.number].user_attrs["fail_reason"]
    retries = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == victim.params
    got = _losses(study, target)
    assert got["complete"] >= target and got["lost"] == [], got
    print(f"\n[faults:dead-pid] kills=1 survived=1 trials_lost={len(got['lost'])} complete={got['complete']} "
          f"wall={time.perf_counter() - t0:.1f}s")


# --------------------------------------------------------------------------- (b) killed while sampling the teacher

def _lock_is_free(lock: Path) -> bool:
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def test_worker_killed_while_sampling_the_teacher(tmp_path):
    from gped_search.files import sha256_of

    name = "tk"
    reports = tmp_path / "reports"
    out = reports / name
    study_file = write_study(tmp_path / "tk.yaml", name, reports, n_trials=1, teacher_iterations=2000)
    cmd = [*gped(), "run", str(study_file), *RUN]
    a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=worker_env())
    lock = out / "teacher.pt.lock"

    def sampling():
        if a.poll() is not None:
            pytest.fail(f"worker exited early ({a.returncode}): {a.stderr.read()[-2000:]}")
        return lock.exists() and not _lock_is_free(lock)

    wait_for(sampling, 240, every=0.05, what="the worker to hold the teacher lock")
    assert not (out / "teacher.pt").exists()
    kill(a)
    assert _lock_is_free(lock), "the dead worker's teacher lock was not released"
    assert not (out / "teacher.pt").exists() and not (out / "teacher.pt.sha256").exists()
    assert len(_study(f"sqlite:///{(out / 'study.db').resolve()}", name).trials) == 0

    b = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(), timeout=400)
    assert b.returncode == 0, b.stderr[-3000:]
    study = _study(f"sqlite:///{(out / 'study.db').resolve()}", name)
    digest = sha256_of(out / "teacher.pt")
    assert (out / "teacher.pt.sha256").read_text().strip() == digest == study.user_attrs["teacher_sha256"]
    assert [t.state.name for t in study.trials] == ["COMPLETE"]


_CRASH = textwrap.dedent("""
    import os, signal, sys
    from gped_search.posterior.artifact import load_teacher, save_teacher
    good, out, at = sys.argv[1], sys.argv[2], sys.argv[3]
    teacher = load_teacher(good)
    real = os.replace
    def replace(src, dst):
        if os.path.basename(dst) == at:
            os.kill(os.getpid(), signal.SIGKILL)  # the machine dies right here
        return real(src, dst)
    os.replace = replace
    save_teacher(os.path.join(out, "teacher.pt"), teacher, {"crash": at})
""")


@pytest.mark.parametrize("at", ["teacher.pt", "teacher.pt.sha256"])
def test_teacher_artifact_appears_with_its_checksum(tmp_path, good_teacher, at):
    """A writer killed at either rename leaves no teacher.pt, or one with its checksum: never a
    teacher.pt that a reader would take as half-written; the next ensure_teacher samples or loads it."""
    import torch

    from gped_search.config import load_study
    from gped_search.engine import prepare
    from gped_search.files import sha256_of
    from gped_search.search import ensure_teacher

    cfg = load_study(write_study(tmp_path / "c.yaml", "crash", tmp_path / "reports"))
    out = cfg.out_dir
    out.mkdir(parents=True)
    r = subprocess.run([sys.executable, "-c", _CRASH, str(good_teacher), str(out), at], env=worker_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr[-2000:]
    pt, side = out / "teacher.pt", out / "teacher.pt.sha256"
    if pt.exists():
        assert side.exists() and side.read_text().strip() == sha256_of(pt)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, info = ensure_teacher(prepare(cfg), out, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert info["teacher_sha256"] == sha256_of(pt)


# --------------------------------------------------------------------------- (c) checksum mismatch

@pytest.mark.parametrize("how", ["flip a byte", "wrong checksum file"])
def test_teacher_checksum_mismatch_is_one_clean_error(tmp_path, good_teacher, capsys, how):
    from gped_search.cli import main

    name = "cs"
    reports = tmp_path / "reports"
    study_file = write_study(tmp_path / "cs.yaml", name, reports)
    out = reports / name
    _place_teacher(good_teacher, out)
    if how == "flip a byte":
        data = bytearray((out / "teacher.pt").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (out / "teacher.pt").write_bytes(bytes(data))
    else:
        (out / "teacher.pt.sha256").write_text("0" * 64 + "\n")
    before = (out / "teacher.pt").read_bytes()
    assert main(["run", str(study_file), *RUN]) == 2
    cap = capsys.readouterr()
    assert cap.err.count("\n") == 1 and cap.err.startswith("gped-search: error: "), cap.err
    assert "checksum mismatch" in cap.err and "teacher.pt" in cap.err
    assert (out / "teacher.pt").read_bytes() == before  # not silently replaced
    assert len(_study(f"sqlite:///{(out / 'study.db').resolve()}", name).trials) == 0  # no trial ran


# --------------------------------------------------------------------------- (d) an unwritable report folder

def test_report_folder_under_a_file_is_one_clean_error(tmp_path, capsys):
    from gped_search.cli import main

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the report folder should be\n")
    study_file = write_study(tmp_path / "rf.yaml", "rf", blocker)
    assert main(["run", str(study_file), *RUN]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gped-search: error: ") and "not_a_folder" in err, err


def _completed_study(tmp_path: Path, good: Path, name: str):
    from gped_search.cli import main

    reports = tmp_path / "reports"
    study_file = write_study(tmp_path / f"{name}.yaml", name, reports, n_trials=1)
    _place_teacher(good, reports / name)
    assert main(["run", str(study_file), *RUN]) == 0
    url = f"sqlite:///{(reports / name / 'study.db').resolve()}"
    return study_file, reports / name, url, [(t.number, t.state.name, t.values) for t in _study(url, name).trials]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions (see the trials-folder test)")
def test_read_only_report_folder_keeps_the_study(tmp_path, good_teacher, capsys):
    from gped_search.cli import main

    study_file, out, url, before = _completed_study(tmp_path, good_teacher, "ro")
    capsys.readouterr()
    out.chmod(0o500)
    try:
        assert main(["run", str(study_file), "--n-trials", "2", *RUN]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not writable" in err, err
    finally:
        out.chmod(0o700)
    assert [(t.number, t.state.name, t.values) for t in _study(url, "ro").trials] == before


def test_unwritable_trials_folder_keeps_the_study(tmp_path, good_teacher, capsys):
    """Works as root too: the folder for trial checkpoints cannot be created mid-study."""
    from gped_search.cli import main

    study_file, out, url, before = _completed_study(tmp_path, good_teacher, "tf")
    shutil.rmtree(out / "trials")
    (out / "trials").write_text("not a folder\n")
    capsys.readouterr()
    assert main(["run", str(study_file), "--n-trials", "2", *RUN]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # The CLI's own report is one line (Optuna may log the failed trial above it).
    assert [ln for ln in err if ln.startswith("gped-search:")] == [err[-1]]
    assert err[-1].startswith("gped-search: error: ") and "trials" in err[-1], err
    after = [(t.number, t.state.name, t.values) for t in _study(url, "tf").trials]
    assert after[: len(before)] == before  # what was recorded is intact
    assert [s for _, s, _ in after[len(before):]] == ["FAIL"]
