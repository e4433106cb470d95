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
print(json.dumps({"rc": rc, "torch": "torch" in sys.modules, "optuna": "optuna" in sys.modules, "out": out.getvalue()}))
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


def test_status_reads_a_saved_copy_until_the_study_changes(tiny_study, tmp_path):
    """A second ``status`` of an unchanged study opens no Optuna; any write to the storage is seen at once."""
    import shutil

    import optuna
    from optuna.trial import TrialState

    shutil.copytree(tiny_study[0], tmp_path / "copy")  # a study folder can move; this test writes to it
    root = tmp_path / "copy"
    sets = [s.replace(str(tiny_study[0]), str(root)) for s in tiny_study[1]]
    first = run_light(["status", QUICKSTART, "--json", *sets])
    second = run_light(["status", QUICKSTART, "--json", *sets])
    assert first["rc"] == second["rc"] == 0, first["out"]
    assert json.loads(first["out"]) == json.loads(second["out"])
    assert not second["optuna"]
    wrong = run_light(["export", QUICKSTART, *sets, "--trial", "99", "--out", str(tmp_path / "x")])
    assert wrong["rc"] == 2 and "trial 99 does not exist" in wrong["out"] and not wrong["optuna"], wrong
    assert (root / "quickstart" / "study.db.status.json").is_file()
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{root / 'quickstart' / 'study.db'}")
    study.tell(study.ask(), state=TrialState.FAIL)  # what a crashed worker leaves behind
    third = run_light(["status", QUICKSTART, "--json", *sets])
    assert json.loads(third["out"])["trials"] == {"COMPLETE": 2, "FAIL": 1} and third["optuna"]
    study.set_user_attr("teacher", {"teacher_acc": 0.5})  # a write that adds no trial
    fourth = run_light(["status", QUICKSTART, "--json", *sets])
    assert json.loads(fourth["out"])["teacher"] == {"teacher_acc": 0.5}


def test_storage_fingerprint_moves_with_every_sqlite_commit(tmp_path):
    import sqlite3

    from gped_search.search.locations import storage_fingerprint

    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert storage_fingerprint(url) is None  # no file yet
    con = sqlite3.connect(tmp_path / "x.db")
    con.execute("create table t (v integer)")
    con.execute("insert into t values (1)")
    con.commit()
    seen = [storage_fingerprint(url)]
    for v in range(3):  # same size, maybe the same mtime tick: the header's change counter still moves
        con.execute("update t set v = ?", (v + 2,))
        con.commit()
        seen.append(storage_fingerprint(url))
    assert len({tuple(f) for f in seen}) == 4
    assert storage_fingerprint("postgresql://u:p@h/db") is None
    (tmp_path / "not.db").write_text("not a database")
    assert storage_fingerprint(f"sqlite:///{tmp_path / 'not.db'}") is None


def test_a_reader_that_leaves_early_gets_no_error_line(tiny_study):
    """``gped-search status ... | head -c 1``: the reader is gone; no ``Broken pipe`` line, exit 141 as Unix tools."""
    import os

    _, sets = tiny_study
    r, w = os.pipe()
    os.close(r)  # the reader has left before the first byte
    try:
        got = subprocess.run([sys.executable, "-m", "gped_search.cli", "status", QUICKSTART, *sets], stdout=w,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)
    finally:
        os.close(w)
    assert got.stderr == "" and got.returncode == 141, got.stderr


def test_export_of_the_knee_after_run_copies_verified_files_without_torch(tiny_study, tmp_path):
    """``run`` exports the knee ahead into the study's export cache; ``export --knee`` is then a copy made
    without torch, byte for byte what a fresh export writes; a changed kept file is exported again."""
    import shutil

    shutil.copytree(tiny_study[0], tmp_path / "copy")  # this test records exports on the study
    root = tmp_path / "copy"
    sets = [s.replace(str(tiny_study[0]), str(root)) for s in tiny_study[1]]
    cache = root / "quickstart" / ".export_cache"
    assert any(cache.glob("trial-*/student.pt2")), "run did not export the knee ahead"
    copied = run_light(["export", QUICKSTART, *sets, "--knee", "--out", str(tmp_path / "a")])
    assert copied["rc"] == 0 and "copied from the export kept" in copied["out"], copied["out"]
    assert not copied["torch"]
    fresh = run_light(["export", QUICKSTART, *sets, "--knee", "--fresh", "--out", str(tmp_path / "b")])
    assert fresh["rc"] == 0 and fresh["torch"] and "copied" not in fresh["out"], fresh["out"]
    names = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "a").iterdir())
    for name in names:
        a, b = (tmp_path / "a" / name), (tmp_path / "b" / name)
        if name == "model_card.json":
            ca, cb = json.loads(a.read_text()), json.loads(b.read_text())
            assert {**ca, "created_utc": 0} == {**cb, "created_utc": 0}
        elif name != "model_card.md":
            assert a.read_bytes() == b.read_bytes(), name
    kept = next(cache.glob("trial-*/student.pt2"))  # the fresh export was kept: corrupt it
    kept.write_bytes(kept.read_bytes() + b"\0")
    again = run_light(["export", QUICKSTART, *sets, "--knee", "--out", str(tmp_path / "c")])
    assert again["rc"] == 0 and again["torch"] and "copied" not in again["out"], again["out"]
    assert (tmp_path / "c" / "student.pt2").read_bytes() == (tmp_path / "b" / "student.pt2").read_bytes()


def test_export_cache_key_covers_the_cards_metadata_and_formats(tmp_path):
    from gped_search.search.export_cache import ExportCache

    ckpt = tmp_path / "student.pt"
    ckpt.write_bytes(b"weights")
    meta = {"study": "s", "trial": 3, "metrics": {"kl": 0.1}}
    key = ExportCache(tmp_path, 3, ckpt, meta, ("checkpoint", "pt2")).key
    assert key == ExportCache(tmp_path, 3, ckpt, dict(meta), ("checkpoint", "pt2")).key
    assert key != ExportCache(tmp_path, 3, ckpt, {**meta, "metrics": {"kl": 0.2}}, ("checkpoint", "pt2")).key
    assert key != ExportCache(tmp_path, 3, ckpt, meta, ("checkpoint", "pt2", "onnx")).key
    ckpt.write_bytes(b"other weights")
    assert key != ExportCache(tmp_path, 3, ckpt, meta, ("checkpoint", "pt2")).key
    assert not ExportCache(tmp_path, 3, ckpt, meta, ("checkpoint", "onnx-int8")).current()  # int8: never kept
