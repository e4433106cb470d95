"""Read-only commands stay light: ``--help``, ``status`` and ``compare`` never import torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import QUICKSTART, ROOT, run_tiny_study

PROBE = """
import contextlib, io, json, sys
from gped_search.cli import main
out = io.StringIO()
try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = main(json.loads(sys.argv[1]))
except SystemExit as e:
    rc = e.code
print(json.dumps({"rc": rc, "torch": "torch" in sys.modules, "out": out.getvalue()}))
"""


def run_light(argv: list[str]) -> dict:
    """``gped-search argv`` in a fresh interpreter: its exit status, output and whether torch was imported."""
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    return run_tiny_study(tmp_path_factory.mktemp("light"), n_trials=2)


def test_help_imports_no_torch():
    got = run_light(["--help"])
    assert got["rc"] == 0 and "compare" in got["out"] and not got["torch"]


def test_status_and_compare_of_a_finished_study_import_no_torch(tiny_study, tmp_path):
    root, sets = tiny_study
    status = run_light(["status", QUICKSTART, "--json", *sets])
    assert status["rc"] == 0, status["out"]
    assert json.loads(status["out"])["study"] == "quickstart" and not status["torch"]
    compare = run_light(["compare", str(root / "quickstart"), "--out", str(tmp_path / "cmp")])
    assert compare["rc"] == 0, compare["out"]
    assert (tmp_path / "cmp").is_dir() and any((tmp_path / "cmp").iterdir())
    assert not compare["torch"]
