"""The report's figures drawn on two processes (FigureCache.prefetch): the same bytes as one process, and
every figure drawn whatever happens to the forked child."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd
import pytest

import gped_search.report.figure_cache as fc
from gped_search.report.sections import ReportExtras
from gped_search.report.writer import write_report

OBJ = {"kl": "minimize", "bytes_fp32": "minimize", "macs": "minimize"}

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="drawing on two processes forks")


def _trials(n: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "number": np.arange(n), "state": ["COMPLETE"] * (n - 1) + ["FAIL"], "family": ["mlp", "cnn"] * (n // 2),
        "kl": rng.uniform(0.01, 1, n), "bytes_fp32": rng.uniform(1e3, 1e6, n), "macs": rng.uniform(1e2, 1e5, n),
        "lambda_g": [0.0, 1e-3] * (n // 2), "duration_s": rng.uniform(1, 9, n),
    })


def _digests(folder) -> dict[str, str]:
    names = [p for p in sorted(folder.iterdir()) if p.suffix in (".png", ".html", ".md") or p.name == fc.MANIFEST]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in names}


def _forks(monkeypatch) -> list[int]:
    real, forks = os.fork, []

    def fork():
        pid = real()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return forks


def test_two_processes_write_the_same_report_as_one(tmp_path, monkeypatch):
    extras = ReportExtras(curves={n: {s: 2.0 / (1 + s / 10 + n) for s in range(3, 61, 3)} for n in range(9)})
    forks = _forks(monkeypatch)
    reports = {}
    for workers in (1, 2):
        monkeypatch.setattr(fc, "workers", lambda w=workers: w)
        write_report(_trials(), OBJ, tmp_path / str(workers), title="t", extras=extras, exported={2: "there"})
        reports[workers] = _digests(tmp_path / str(workers))
    assert len(forks) == 1  # the second report only
    assert sum(name.endswith(".png") for name in reports[1]) == 8
    assert reports[1] == reports[2]


def _jobs(n: int = 4):
    from matplotlib.figure import Figure

    def make(i):
        fig = Figure(figsize=(3, 2), layout="constrained")
        ax = fig.add_subplot()
        ax.plot(np.arange(5), np.arange(5) ** (1 + i / 4), label=f"curve {i}")
        ax.set(title=f"figure {i}", xlabel="step", ylabel="loss")
        ax.legend()
        return fig

    return [(f"f{i}.png", lambda i=i: make(i)) for i in range(n)]


@pytest.mark.parametrize("failure", ["raises", "dies", "exits_early", "hangs", "no_fork"])
def test_a_failed_child_leaves_every_figure_to_this_process(failure, monkeypatch):
    serial = {name: fc.png_bytes(make()) for name, make in _jobs()}
    parent = os.getpid()
    if failure == "no_fork":
        def no_fork():
            raise OSError("no process to spare")

        monkeypatch.setattr(os, "fork", no_fork)
    monkeypatch.setattr(fc, "CHILD_TIMEOUT_S", 2.0)  # a silent child is killed after this long

    def in_child(make):
        def wrapped():
            if os.getpid() != parent:
                if failure == "raises":
                    raise RuntimeError("only in the child")
                if failure == "dies":
                    os.kill(os.getpid(), 9)
                if failure == "hangs":  # a lock inherited from the parent, never released
                    import time

                    time.sleep(60)
                os._exit(0)  # "exits_early": exit 0, nothing sent
            return make()

        return wrapped

    got = fc.draw_in_two([(name, in_child(make)) for name, make in _jobs()])
    assert got == serial


def test_an_error_here_is_raised_and_the_child_reaped(monkeypatch):
    forks = _forks(monkeypatch)
    parent = os.getpid()

    def fails_here():
        if os.getpid() == parent:
            raise ValueError("drawn wrong here")
        return _jobs(1)[0][1]()

    jobs = _jobs(3)
    with pytest.raises(ValueError, match="drawn wrong here"):
        fc.draw_in_two([*jobs[:1], ("bad.png", fails_here), *jobs[1:]])
    assert len(forks) == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(forks[0], os.WNOHANG)  # already waited for


def test_render_returns_what_prefetch_drew_and_draws_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(fc, "workers", lambda: 2)
    cache = fc.FigureCache(tmp_path, "digest")
    jobs = _jobs(3)
    cache.prefetch(jobs[:2])
    assert sorted(cache.drawn) == ["f0.png", "f1.png"]

    def never():
        raise AssertionError("drawn twice")

    for name, make in jobs:
        data = cache.render(name, never if name in cache.drawn else make)
        assert data == fc.png_bytes(make())
    assert cache.drawn == {} and sorted(cache.files) == ["f0.png", "f1.png", "f2.png"]


def test_workers(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(fc.threading, "active_count", lambda: 1)
    monkeypatch.delenv("GPED_REPORT_WORKERS", raising=False)
    assert fc.workers() == 2
    for value, expected in (("1", 1), ("0", 1), ("2", 2), ("x", 2)):
        monkeypatch.setenv("GPED_REPORT_WORKERS", value)
        assert fc.workers() == expected, value
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert fc.workers() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(fc.threading, "active_count", lambda: 2)
    assert fc.workers() == 1  # never a fork beside another thread
