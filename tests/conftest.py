"""Shared test helpers: the quickstart study shrunk to seconds, and one-line CLI errors.

``pg.py`` holds the PostgreSQL and process helpers of the system tests (``-m system``: SIGKILL,
fault injection, PostgreSQL), which CI runs as a second step after the fast suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "studies" / "quickstart.yaml")
TINY = ("teacher.iterations=600", "teacher.burn_in=200", "teacher.thin=20", "teacher.bank_size=4",
        "distill.steps=60", "prune.finetune_steps=20")
"""Overrides that shrink the quickstart study to seconds (a 600-iteration teacher, 60 student steps)."""


def tiny_sets(report_dir: Path, *extra: str) -> list[str]:
    """``--set`` arguments for the tiny quickstart study in ``report_dir`` (plus ``extra`` overrides)."""
    return [a for o in (f"report_dir={report_dir}", *TINY, *extra) for a in ("--set", o)]


def one_error_line(err: str) -> str:
    """The single ``gped-search: error: ...`` line a user error prints (no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gped-search: error: "), err
    assert "Traceback" not in err
    return lines[0]


def tiny_engine(*extra: str):
    """For a module fixture (``yield from``): (config, prepared data, teacher) of the quickstart with a
    400-iteration teacher on one torch thread, plus ``extra`` overrides; restores the thread count."""
    import torch

    from gped_search import engine
    from gped_search.config import load_study

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = load_study(QUICKSTART, ["device=cpu", "teacher.iterations=400", "teacher.burn_in=100", "teacher.thin=20",
                                  "teacher.bank_size=4", *extra])
    p = engine.prepare(cfg)
    yield cfg, p, engine.sample_teacher(p, progress=False)
    torch.set_num_threads(before)


def cli(argv: list[str]) -> tuple[int, str, str]:
    """``gped-search argv`` in this process: (exit status, stdout, stderr)."""
    import contextlib
    import io

    from gped_search.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def run_tiny_study(root: Path, n_trials: int = 3) -> tuple[Path, list[str]]:
    """A tiny quickstart study run through the CLI in ``root``: (root, its --set arguments)."""
    sets = tiny_sets(root, "device=cpu")
    rc, _, err = cli(["run", QUICKSTART, "--n-trials", str(n_trials), "--no-progress", *sets])
    assert rc == 0, err
    return root, sets


def study_frame(root: Path):
    """The trials frame of the tiny quickstart study in ``root``."""
    from gped_search.config import load_study
    from gped_search.search import open_study, trials_frame

    return trials_frame(open_study(load_study(QUICKSTART, [f"report_dir={root}", "device=cpu"]), create=False))


@pytest.fixture
def quickstart() -> str:
    return QUICKSTART
