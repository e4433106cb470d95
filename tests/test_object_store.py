"""Several machines without a shared filesystem (``-m system``): PostgreSQL holds the study and the teacher
lease, an S3 server (moto's server mode, over real HTTP, started here) holds every file.

Each worker runs in its own temp folder with its own copy of the study file; nothing is shared but the
database URL and the bucket. One worker is SIGKILLed while it samples the teacher; another resumes the
chain from the store's checkpoint; every trial completes once; ``export --knee`` from an empty folder
gives the files a shared filesystem gives. Torn or tampered objects and a misconfigured store are one
line, and the S3 secret appears in no file the study writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pg
import pytest
import yaml

pytestmark = pytest.mark.system

BUCKET = "gped-artifacts"
KEY_ID = "GPEDTESTKEYID"
SECRET = "gped-S3-secret-9f8e7d6c5b4a"
NAME = "objstore"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port, with the bucket created; its AWS environment."""
    pytest.importorskip("boto3", reason="boto3 is not installed (pip install -e .[test] or .[s3])")
    try:
        import flask  # noqa: F401  (moto's server mode needs it)
        import moto.server  # noqa: F401
    except ImportError:
        pytest.skip("moto's server mode is not installed (pip install -e .[test]: moto[server])")
    import boto3

    port = pg._free_port()
    logdir = Path(tempfile.mkdtemp(prefix="gped-moto-"))
    log = open(logdir / "moto.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)

    def up():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        pg.wait_for(up, 60, what="moto's S3 server")
        endpoint = f"http://127.0.0.1:{port}"
        env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ENDPOINT_URL": endpoint, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
               "AWS_EC2_METADATA_DISABLED": "true"}
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                              region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield SimpleNamespace(env=env, client=client, endpoint=endpoint)
    finally:
        pg.kill(proc)
        log.close()
        shutil.rmtree(logdir, ignore_errors=True)


def _env(s3, **changes) -> dict[str, str]:
    env = pg.worker_env(**s3.env, GPED_LEASE_SECONDS="3")
    for k in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
              "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):  # only our server, key
        env.pop(k, None)
    for k, v in changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def _study(folder: Path, prefix: str, **kw) -> Path:
    """This worker's own copy of the study file, its report folder inside ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    d = pg.study_dict(NAME, folder / "reports", **kw)
    d["teacher"]["checkpoint_every"] = 400
    d["search"]["artifacts"] = f"s3://{BUCKET}/{prefix}"
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def _gped(args, cwd: Path, env, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*pg.gped(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _keys(s3, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def test_a_misconfigured_store_is_one_line_before_any_work(s3, tmp_path):
    study = _study(tmp_path / "w", "misconfigured")
    cases = [
        (["--set", "search.artifacts=s3://no-such-gped-bucket/x"], {}, "bucket 'no-such-gped-bucket' does not exist"),
        ([], {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None},
         "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ([], {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{pg._free_port()}"}, "cannot reach the endpoint"),
    ]
    procs = [subprocess.Popen([*pg.gped(), "run", str(study), "--no-progress", *extra], cwd=tmp_path,
                              env=_env(s3, **env_changes), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for extra, env_changes, _ in cases]  # side by side
    for proc, (_, _, want) in zip(procs, cases):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        line = err.strip().splitlines()
        assert len(line) == 1 and line[0].startswith("gped-search: error: search.artifacts s3://"), err
        assert want in line[0], line[0]
        assert not (tmp_path / "w" / "reports").exists()  # nothing started: no report folder, no teacher


def _wait_mid_chain(s3, prefix: str, proc) -> int:
    """The iteration of the first chain checkpoint in the store while the teacher is still unpublished."""
    def seen():
        assert proc.poll() is None, "the worker exited before a chain checkpoint reached the store"
        gens = [int(m.group(1)) for k in _keys(s3, f"{prefix}/teacher.chain/")
                if (m := re.search(r"chain-(\d+)\.pt\.sha256$", k))]
        return max(gens) if gens else None

    return pg.wait_for(seen, 240, every=0.05, what="a chain checkpoint in the store")


def _card(folder: Path) -> dict:
    """Every exported file's bytes; the model card without its creation time."""
    out = {}
    for f in sorted(folder.iterdir()):
        text = f.read_bytes()
        if f.name.startswith("model_card"):
            text = re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", b"<time>", text)
        out[f.name] = text
    return out


def test_three_workers_without_shared_files_one_killed_while_sampling(s3, tmp_path):
    prefix = "studies"
    with pg.postgres_cluster() as url:
        dirs = [tmp_path / f"worker{i}" for i in range(3)]
        studies = [_study(d, prefix, n_trials=3, teacher_iterations=8000) for d in dirs]
        run = lambda i: subprocess.Popen(  # noqa: E731
            [*pg.gped(), "run", str(studies[i]), "--storage", url, "--no-progress", "--no-report"],
            cwd=dirs[i], env=_env(s3), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = run(0)
        killed_at = _wait_mid_chain(s3, f"{prefix}/{NAME}", first)
        pg.kill(first)
        assert f"{prefix}/{NAME}/teacher.pt.key" not in _keys(s3, prefix)  # killed before the teacher was done
        others = [run(1), run(2)]
        outs = [p.communicate(timeout=400) for p in others]
        for p, (_, err) in zip(others, outs):
            assert p.returncode == 0, err[-3000:]
        resumed = [err for _, err in outs if "resuming the chain from the store's checkpoint" in err]
        assert len(resumed) == 1, [e[-800:] for _, e in outs]  # one sampled, from the killed worker's checkpoint
        it = int(re.search(r"store's checkpoint at iteration (\d+)", resumed[0]).group(1))
        assert it >= killed_at

        import optuna

        study = optuna.load_study(study_name=NAME, storage=url)
        trials = study.get_trials(deepcopy=False)
        assert {t.state.name for t in trials} == {"COMPLETE"} and len(trials) >= 3  # none failed, none left RUNNING
        assert len({t.number for t in trials}) == len(trials)
        teacher = study.user_attrs["teacher"]
        assert teacher["iterations"] == 8000 and teacher["sessions"] >= 2  # one chain, over two workers
        stored = set(_keys(s3, f"{prefix}/{NAME}/trials/"))
        for t in trials:  # every trial's checkpoint is in the store, once, with its checksum
            key = f"{prefix}/{NAME}/{t.user_attrs['checkpoint']}"
            assert key in stored and key + ".sha256" in stored
        assert len([k for k in stored if k.endswith("student.pt")]) == len(trials)

        # a fourth, empty folder with the study file, the database URL and the bucket, nothing else
        fourth = tmp_path / "fourth"
        study4 = _study(fourth, prefix)
        r = _gped(["export", str(study4), "--storage", url, "--knee", "--out", str(fourth / "exported")], fourth,
                  _env(s3))
        assert r.returncode == 0, r.stderr
        knee = json.loads((fourth / "exported" / "model_card.json").read_text())["study"]["trial_number"]
        where = f"s3://{BUCKET}/{prefix}/{NAME}"
        # the same export on a shared filesystem (the workers' report folders in one place, no store), and
        # the other read-only commands from the fourth folder: side by side
        shared = tmp_path / "shared"
        for d in dirs:
            shutil.copytree(d / "reports", shared / "reports", dirs_exist_ok=True)
        env4 = _env(s3, XDG_CACHE_HOME=str(fourth / "cache"))
        runs = {
            "status": (["status", str(study4), "--storage", url], fourth),
            "report": (["report", str(study4), "--storage", url, "--out", str(fourth / "report")], fourth),
            "downstream": (["downstream", str(study4), "--storage", url, "--trials", str(knee), "--baseline-steps",
                            "0"], fourth),
            "evaluate": (["evaluate", f"{where}/trials/{knee:05d}/student.pt", "--teacher", f"{where}/teacher.pt"],
                         fourth),
            "shared": (["export", str(studies[1]), "--storage", url, "--set", f"report_dir={shared / 'reports'}",
                        "--set", "search.artifacts=null", "--knee", "--out", str(shared / "exported")], shared),
        }
        procs = {k: subprocess.Popen([*pg.gped(), *a], cwd=cwd, env=env4, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for k, (a, cwd) in runs.items()}
        done = {k: (p.communicate(timeout=300), p.returncode) for k, p in procs.items()}
        for k, ((_, err), rc) in done.items():
            assert rc == 0, (k, err[-2000:])
        assert "teacher chain: done, iteration 8,000 of 8,000" in done["status"][0][0]
        assert "rank_spearman" in done["evaluate"][0][0]  # scored against the teacher fetched from the store
        pruned = {t.number for t in trials if t.user_attrs.get("units_removed", 0) > 0}  # the report's layer table
        cached = {int(p.parent.name) for p in (fourth / "reports" / NAME / "trials").glob("*/student.pt")}
        assert pruned <= cached
        assert _card(fourth / "exported") == _card(shared / "exported")
        assert _keys(s3, f"{prefix}/{NAME}/exports/")  # the exported files went to the store too

        # no secret in any file the study wrote, in the bucket, or in the study's records
        for path in [p for root in (*dirs, fourth) for p in root.rglob("*") if p.is_file()]:
            assert SECRET.encode() not in path.read_bytes(), path
        for key in _keys(s3, prefix):
            assert SECRET.encode() not in s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read(), key
        records = json.dumps([study.user_attrs, *[t.user_attrs for t in trials]], default=str)
        assert SECRET not in records

        # a tampered checkpoint is refused by its checksum, in one line
        key = f"{prefix}/{NAME}/trials/{knee:05d}/student.pt"
        body = bytearray(s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        body[len(body) // 2] ^= 0xFF
        s3.client.put_object(Bucket=BUCKET, Key=key, Body=bytes(body))
        fifth = tmp_path / "fifth"
        r = _gped(["export", str(_study(fifth, prefix)), "--storage", url, "--knee", "--out", str(fifth / "e")], fifth,
                  _env(s3))
        assert r.returncode == 2
        line = r.stderr.strip().splitlines()
        assert len(line) == 1 and "checksum mismatch" in line[0] and "torn or tampered; refused" in line[0], r.stderr
        assert not (fifth / "e").exists()
