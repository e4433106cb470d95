"""The object store (``search.artifacts``) without a server: a folder store, checksums, the local cache,
the database lease on SQLite, the chain checkpoints' copy in the store. Over S3 and PostgreSQL with
several workers: ``test_object_store.py`` (``-m system``)."""

from __future__ import annotations

import io
import os
import time

import pytest
from conftest import QUICKSTART, cli, one_error_line

from gped_search.errors import StoreError
from gped_search.store import LocalStore, get_file, open_store, put_file, stored_sha256
from gped_search.store.chain_sync import ChainMirror, pull_chain, store_generations
from gped_search.store.lease import Lease


def test_put_get_verifies_and_caches(tmp_path):
    store = open_store(f"file://{tmp_path / 'bucket'}").child("study")
    src = tmp_path / "student.pt"
    src.write_bytes(b"weights" * 100)
    digest = put_file(store, "trials/00001/student.pt", src)
    assert store.list("trials/") == ["trials/00001/student.pt", "trials/00001/student.pt.sha256"]
    assert stored_sha256(store, "trials/00001/student.pt") == digest
    dest = tmp_path / "cache" / "trials" / "00001" / "student.pt"
    assert get_file(store, "trials/00001/student.pt", dest) == dest
    assert dest.read_bytes() == src.read_bytes()
    assert dest.with_name("student.pt.sha256").read_text().strip() == digest  # local readers verify it too
    before = dest.stat().st_mtime_ns
    get_file(store, "trials/00001/student.pt", dest)  # a matching local copy is the cache: not downloaded again
    assert dest.stat().st_mtime_ns == before
    assert get_file(store, "trials/00002/student.pt", tmp_path / "x.pt") is None  # nothing stored


def test_a_tampered_or_torn_object_is_refused_in_one_line(tmp_path):
    store = LocalStore(tmp_path / "bucket")
    src = tmp_path / "teacher.pt"
    src.write_bytes(b"posterior" * 100)
    put_file(store, "teacher.pt", src)
    store.write_bytes("teacher.pt", b"posterior" * 50)  # torn: half of it
    with pytest.raises(StoreError, match=r"teacher.pt: checksum mismatch .*torn or tampered; refused") as e:
        get_file(store, "teacher.pt", tmp_path / "cache" / "teacher.pt")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "cache" / "teacher.pt").exists()
    store.remove("teacher.pt")
    with pytest.raises(StoreError, match="checksum is stored but the object is missing"):
        get_file(store, "teacher.pt", tmp_path / "cache" / "teacher.pt")


def test_store_urls_and_the_optuna_artifact_protocol(tmp_path):
    import optuna

    with pytest.raises(StoreError, match="give s3://bucket/prefix or file:///folder"):
        open_store("gs://bucket")
    with pytest.raises(StoreError, match="no bucket"):
        open_store("s3:///prefix")
    view = LocalStore(tmp_path).artifact_store()
    view.write("abc", io.BytesIO(b"x"))
    assert view.open_reader("abc").read() == b"x" and (tmp_path / "artifacts" / "abc").is_file()
    with pytest.raises(optuna.artifacts.exceptions.ArtifactNotFound):
        view.open_reader("missing")


def test_the_lease_goes_to_one_holder_and_expires_when_not_renewed(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    a, b = Lease(url, "s/teacher", ttl=2), Lease(url, "s/teacher", ttl=2)
    assert a.try_acquire() and not b.try_acquire()
    assert a.current()[0] == a.holder and a.renew()
    time.sleep(2.2)  # a stopped renewing (a dead worker): its lease runs out
    assert b.try_acquire() and not a.renew()
    with b.renewing():
        time.sleep(2.5)  # renewed from the thread: still b's past its first expiry
        assert not a.try_acquire() and not b.lost.is_set()
    assert b.current() is None and a.try_acquire()  # released on leaving the block
    a.close(), b.close()


def test_chain_checkpoints_reach_the_store_and_resume_elsewhere(tmp_path):
    from gped_search.posterior.chain_checkpoint import latest_checkpoint, save_checkpoint_generation

    store = LocalStore(tmp_path / "bucket")
    here, there = tmp_path / "worker1" / "teacher.chain", tmp_path / "worker2" / "teacher.chain"
    with ChainMirror(store, "teacher.chain", here, every=0.05) as mirror:
        save_checkpoint_generation(here, 100, {"t": 100}, key="k")
        mirror.sync()
        save_checkpoint_generation(here, 200, {"t": 200}, key="k")
    assert store_generations(store, "teacher.chain") == [200]  # older generations leave the store
    assert pull_chain(store, "teacher.chain", there) == 200
    assert latest_checkpoint(there, "k") == (200, {"t": 200})
    save_checkpoint_generation(here, 300, {"t": 300}, key="k")
    ChainMirror(store, "teacher.chain", here).sync()
    store.write_bytes("teacher.chain/chain-300.pt", b"torn")  # the one generation kept is torn: nothing to resume
    assert pull_chain(store, "teacher.chain", tmp_path / "worker3") is None


def test_a_store_that_cannot_be_written_is_one_line_before_any_work(tmp_path):
    rc, _, err = cli(["status", QUICKSTART, "--set", f"report_dir={tmp_path}", "--set",
                      "search.artifacts=file:///proc/gped-no-such-folder"])
    assert rc == 2
    line = one_error_line(err)
    assert "search.artifacts file:///proc/gped-no-such-folder" in line and "cannot write there" in line
    assert not list(tmp_path.iterdir())


def test_search_artifacts_must_be_a_store_url(tmp_path):
    rc, _, err = cli(["status", QUICKSTART, "--set", "search.artifacts=bucket/prefix"])
    assert rc == 2 and "search.artifacts must be s3://bucket/prefix or file:///folder" in one_error_line(err)


def test_status_reads_the_chain_from_the_store_and_the_lease(tmp_path):
    from gped_search.config import load_study
    from gped_search.posterior.chain_checkpoint import save_checkpoint_generation, write_progress
    from gped_search.search.teacher_lease import store_chain_status, teacher_lease

    cfg = load_study(QUICKSTART, [f"report_dir={tmp_path / 'elsewhere'}", f"search.artifacts=file://{tmp_path / 'b'}"])
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert store_chain_status(cfg, url) is None  # no chain yet
    chain = tmp_path / "worker" / "teacher.chain"  # another machine's chain folder
    save_checkpoint_generation(chain, 400, {"t": 400}, key="k")
    write_progress(chain, iteration=500, total=1000, rate=100.0, state="running")
    ChainMirror(LocalStore(tmp_path / "b" / cfg.name), "teacher.chain", chain).sync()
    lease = teacher_lease(url, cfg.name)
    assert lease.try_acquire()
    st = store_chain_status(cfg, url)
    assert st["state"] == "running" and st["iteration"] == 500 and st["seconds_left"] == 5.0
    assert st["holder"] == lease.holder.rsplit(":", 1)[0]
    lease.release()  # the worker died (or stopped): the chain waits at its checkpoint
    st = store_chain_status(cfg, url)
    assert st["state"] == "paused" and st["iteration"] == 400 and st["holder"] is None
    lease.close()
    nowhere = tmp_path / "no-such-folder" / "study.db"  # status reads the lease, never creates a database or table
    assert store_chain_status(cfg, f"sqlite:///{nowhere}")["holder"] is None and not nowhere.parent.exists()


def test_the_teacher_through_the_store_sampled_once_loaded_elsewhere_extended_elsewhere(tmp_path):
    import torch

    from gped_search.config import load_study
    from gped_search.engine import prepare
    from gped_search.search.teacher_store import ensure_shared_teacher

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    tiny = ["device=cpu", "teacher.burn_in=100", "teacher.thin=20", "teacher.bank_size=4",
            f"search.artifacts=file://{tmp_path / 'bucket'}"]

    def worker(folder: str, iterations: int):
        cfg = load_study(QUICKSTART, [*tiny, f"teacher.iterations={iterations}", f"report_dir={tmp_path / folder}"])
        return ensure_shared_teacher(prepare(cfg), cfg.out_dir, url, progress=False)

    try:
        t1, info1 = worker("one", 300)
        t2, info2 = worker("two", 300)  # another machine: the store's teacher, not sampled again
        assert info1["teacher_sampled_here"] and not info2["teacher_sampled_here"]
        assert torch.equal(t1.test["predictive"], t2.test["predictive"])
        t3, info3 = worker("three", 500)  # a third machine extends the chain from the store's final checkpoint
        assert info3["teacher_extended_from"] == 300 and t3.stats["iterations"] == 500 and t3.stats["sessions"] == 2
        assert (tmp_path / "bucket" / "quickstart" / "teacher.pt.key").read_text().split() == [
            info3["teacher_key"], "500"]
    finally:
        torch.set_num_threads(before)


def test_result_folders_go_through_the_store_to_reports_elsewhere(tmp_path):
    from gped_search.config import load_study
    from gped_search.store.files import fetch_study_folder, publish_study_folder

    def cfg(folder):
        return load_study(QUICKSTART, [f"report_dir={tmp_path / folder}", f"search.artifacts=file://{tmp_path / 'b'}"])

    here, there = cfg("here"), cfg("there")
    (here.out_dir / "downstream").mkdir(parents=True)
    (here.out_dir / "downstream" / "downstream.csv").write_text("model,acc\nteacher,0.9\n")
    (tmp_path / "elsewhere").mkdir()
    assert publish_study_folder(here, here.out_dir / "downstream") == 1
    assert publish_study_folder(here, tmp_path / "elsewhere") == 0  # an --out outside the report folder stays put
    assert fetch_study_folder(there, "downstream") == 1
    assert (there.out_dir / "downstream" / "downstream.csv").read_text() == "model,acc\nteacher,0.9\n"
    assert fetch_study_folder(there, "robustness") == 0


@pytest.fixture
def s3_mock(monkeypatch):
    """boto3 against moto's in-process S3 (no server; the system tests use its HTTP server)."""
    pytest.importorskip("boto3", reason="boto3 is not installed (pip install -e .[test] or .[s3])")
    moto = pytest.importorskip("moto", reason="moto is not installed (pip install -e .[test])")
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    with moto.mock_aws():
        import boto3

        boto3.client("s3").create_bucket(Bucket="gped-unit")
        yield


def test_s3_store_objects_checksums_and_errors(s3_mock, tmp_path):
    import optuna

    store = open_store("s3://gped-unit/runs").child("study")
    store.check(write=True)
    src = tmp_path / "student.pt"
    src.write_bytes(b"w" * 5000)
    put_file(store, "trials/00001/student.pt", src)
    assert store.list() == ["trials/00001/student.pt", "trials/00001/student.pt.sha256"]
    assert get_file(store, "trials/00001/student.pt", tmp_path / "c" / "s.pt").read_bytes() == src.read_bytes()
    store.write_bytes("trials/00001/student.pt", b"w" * 4999)
    with pytest.raises(StoreError, match=r"s3://gped-unit/runs/study/trials/00001/student.pt: checksum mismatch"):
        get_file(store, "trials/00001/student.pt", tmp_path / "d" / "s.pt")
    view = store.artifact_store()  # optuna's artifact API over the store, under artifacts/
    study = optuna.create_study()
    trial = study.ask()
    artifact_id = optuna.artifacts.upload_artifact(artifact_store=view, file_path=str(src), study_or_trial=trial)
    assert f"artifacts/{artifact_id}" in store.list("artifacts/")
    with pytest.raises(StoreError, match="bucket 'no-such-gped-bucket' does not exist; create it or fix search.artifacts"):
        open_store("s3://no-such-gped-bucket/x").check()
