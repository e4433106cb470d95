"""Shared helpers for the storage and fault tests (imported as ``pg``; no conftest needed).

* :func:`postgres_cluster`: a throw-away PostgreSQL server (initdb in a temp folder, loopback only,
  a free port, its unix socket in the temp folder, password authentication) that yields the URL
  ``postgresql+psycopg2://gped:<password>@127.0.0.1:<port>/gped`` and is stopped and deleted after.
  Skips (``pytest.skip``) with the reason when the binaries or psycopg2 are missing or initdb cannot
  run. PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` account
  (else ``nobody``) through ``subprocess``'s ``user=``; the temp folder is handed to that account.
* :func:`write_study`: a tiny CPU study file (digits, a 32-unit teacher, 4-32-unit students).
* :func:`gped` / :func:`worker_env`: the ``gped-search`` command of this venv, one torch thread per
  process (two OpenMP threads per process on a busy 2-core machine run many times slower).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

PASSWORD = "gped-Secr3t-pw"
USER = "gped"
DB = "gped"

_BIN_DIRS = ("/usr/local/bin", *sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True))


def _pg_bin() -> Path | None:
    """The first folder holding initdb, pg_ctl and postgres: /usr/local/bin, /usr/lib/postgresql/*/bin, PATH."""
    for d in (*_BIN_DIRS, *os.environ.get("PATH", "").split(os.pathsep)):
        if d and all(os.access(Path(d) / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> str | None:
    """The account the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return ""


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """Start a private PostgreSQL server; yield its SQLAlchemy URL; stop and delete it afterwards."""
    try:
        import psycopg2
    except ImportError:
        pytest.skip("psycopg2 is not installed (pip install -e .[postgres] or .[test])")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found")
    user = _server_user()
    if user == "":
        pytest.skip("running as root and no 'postgres' or 'nobody' account to run the server as")
    # Not pytest's tmp_path: as root that lies in a 0700 folder the server account cannot enter.
    root = Path(tempfile.mkdtemp(prefix="gped-pg-"))
    kw: dict = {}
    if user:
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "cwd": str(root)}
    root.chmod(0o700)
    data, log, pwfile = root / "data", root / "server.log", root / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    if user:
        os.chown(pwfile, pwd.getpwnam(user).pw_uid, -1)

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(bindir / args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "LC_ALL": "C", "LANG": "C"}, **kw)

    started = False
    try:
        r = run("initdb", "-D", str(data), "-U", USER, f"--pwfile={pwfile}", "-A", "scram-sha-256",
                "-E", "UTF8", "--locale=C", "--no-sync")
        if r.returncode != 0:
            pytest.skip(f"initdb failed here (rc {r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}")
        for _attempt in range(3):  # the free port may be taken between probing and binding
            port = _free_port()
            opts = (f"-h 127.0.0.1 -p {port} -k {root} -F -c fsync=off -c synchronous_commit=off "
                    f"-c full_page_writes=off -c max_connections=60")
            r = run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", opts, "start")
            if r.returncode == 0:
                started = True
                break
        if not started:
            tail = log.read_text()[-400:] if log.exists() else r.stderr
            pytest.skip(f"PostgreSQL did not start: {tail.strip()}")
        conn = psycopg2.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DB}")
        conn.close()
        yield f"postgresql+psycopg2://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}"
    finally:
        if started:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- tiny studies and workers

def study_dict(name: str, report_dir: Path, *, n_trials: int = 4, steps: int = 60, sampler: str = "tpe",
               teacher_iterations: int = 600) -> dict:
    return {
        "name": name, "seed": 0, "device": "cpu", "report_dir": str(report_dir),
        "data": {"dataset": "digits"},
        "teacher": {"arch": "mlp", "widths": [32], "iterations": teacher_iterations, "burn_in": 200, "thin": 20,
                    "bank_size": 4, "step_size": 1.7e-4, "check_every": 200},
        "distill": {"targets": ["predictive", "expected_entropy"], "target_mode": "cached", "steps": steps,
                    "lr": 0.003},
        "student": {"family": "mlp", "widths": [16]},
        "prune": {"finetune_steps": 20},
        "search": {"sampler": sampler, "n_trials": n_trials,
                   "objectives": {"kl": "minimize", "bytes_fp32": "minimize"},
                   "space": {"mlp_width": {"low": 4, "high": 32}, "lambda_g": [0.0, 0.001]}},
    }


def write_study(path: Path, name: str, report_dir: Path, **kw) -> Path:
    path.write_text(yaml.safe_dump(study_dict(name, report_dir, **kw), sort_keys=False))
    return path


def gped() -> list[str]:
    """The ``gped-search`` console script of the running interpreter's environment."""
    exe = Path(sys.executable).with_name("gped-search")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gped_search.cli"]


def worker_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL one process we started (by its pid) and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(cond, timeout: float, every: float = 0.1, what: str = "condition"):
    """Poll ``cond()`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
