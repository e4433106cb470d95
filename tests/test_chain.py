"""Resumable, extendable teacher chains (issue 15): checkpoints, SIGKILL + resume, extension, status."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from gped_search import engine as api
from gped_search.config import load_study, study_from_dict, to_dict
from gped_search.engine import online
from gped_search.posterior.chain_checkpoint import (
    chain_status,
    latest_checkpoint,
    list_generations,
    save_checkpoint_generation,
)

ROOT = Path(__file__).resolve().parents[1]


def _cfg(tmp: Path, **teacher) -> dict:
    d = to_dict(load_study(ROOT / "studies" / "quickstart.yaml"))
    d["report_dir"] = str(tmp)
    d["name"] = "chain"
    d["device"] = "cpu"
    d["teacher"].update({"iterations": 2400, "burn_in": 300, "thin": 10, "bank_size": 4, "checkpoint_every": 400,
                         "check_every": 100, **teacher})
    d["distill"].update({"target_mode": "online", "entropy_loss": "l2"})
    d["search"]["n_trials"] = 2
    return d


def _write(tmp: Path, d: dict, name: str = "study.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(d))
    return path


RUNNER = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    from gped_search.engine import online
    from gped_search.config import load_study
    from gped_search.distill import chain
    from gped_search.posterior import chain_checkpoint as ck
    mode, arg, study, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if mode == "iteration":  # die (SIGKILL) right after iteration `arg`'s thinned sample
        orig = chain.TeacherChain._thinned
        def _thinned(self):
            orig(self)
            if self.t >= arg:
                os.kill(os.getpid(), signal.SIGKILL)
        chain.TeacherChain._thinned = _thinned
    elif mode == "write":  # die inside the `arg`-th checkpoint write: checksum written, data file not yet
        orig = ck._fsync_write
        calls = [0]
        def _write(path, data):
            if path.name.endswith(".pt"):
                calls[0] += 1
                if calls[0] == arg:
                    tmp = path.with_name("." + path.name + ".partial.tmp")
                    tmp.write_bytes(data[: len(data) // 2])  # half a file on disk, as a real crash leaves
                    os.kill(os.getpid(), signal.SIGKILL)
            orig(path, data)
        ck._fsync_write = _write
    online.distill_online(load_study(study), progress=False, out_dir=out)
""")


def _run(mode: str, arg: int, study: Path, out: Path) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", RUNNER, mode, str(arg), str(study), str(out)], env=env,
                       capture_output=True, text=True, timeout=300)
    if r.returncode > 0:
        print(r.stderr[-3000:])
    return r.returncode


def _same_outputs(a: Path, b: Path) -> None:
    ra, rb = json.loads((a / "distill.json").read_text()), json.loads((b / "distill.json").read_text())
    for k in ("teacher_acc", "teacher_nll", "teacher_mc_floor_kl", "test_samples", "bank_samples", "student_steps"):
        assert ra["teacher"][k] == rb["teacher"][k], k
    for k, v in ra["student"].items():
        if k.startswith("latency"):
            continue  # measured wall time, not a function of the run
        assert rb["student"][k] == v, k
    sa = torch.load(a / "distill_student.pt", weights_only=True)["state_dict"]
    sb = torch.load(b / "distill_student.pt", weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.system
def test_sigkill_twice_then_resume_equals_uninterrupted_run(tmp_path):
    study = _write(tmp_path, _cfg(tmp_path))
    torch.set_num_threads(1)
    online.distill_online(load_study(study), progress=False, out_dir=tmp_path / "ref")
    out = tmp_path / "killed"
    rng = random.Random(os.getpid())
    kill_at = rng.randrange(500, 1500)  # a random point between checkpoints
    print(f"SIGKILL after iteration {kill_at} (random.Random({os.getpid()}))")  # shown if the test fails
    assert _run("iteration", kill_at, study, out) == -signal.SIGKILL
    gens = list_generations(out / online.DISTILL_CHAIN_DIR)
    assert gens and gens[-1][0] <= kill_at
    st = chain_status(out / online.DISTILL_CHAIN_DIR)
    assert st["state"] == "paused" and st["checkpoint_iteration"] == gens[-1][0] and st["total"] == 2400
    # resumed, then killed inside its 2nd checkpoint write (after the checksum, before the data file)
    assert _run("write", 2, study, out) == -signal.SIGKILL
    left = list_generations(out / online.DISTILL_CHAIN_DIR)
    it, _ = latest_checkpoint(out / online.DISTILL_CHAIN_DIR)
    assert it == left[-1][0] > gens[-1][0]  # the complete generation before the torn write
    assert _run("none", 0, study, out) == 0
    _same_outputs(tmp_path / "ref", out)
    assert chain_status(out / online.DISTILL_CHAIN_DIR)["state"] == "done"


def test_extend_a_finished_chain_equals_the_longer_run(tmp_path):
    d = _cfg(tmp_path, checkpoint_every=None)
    d["distill"]["online_average"] = "none"  # a weight average's window depends on the length asked for
    long = _write(tmp_path, d, "long.yaml")
    short = _write(tmp_path, {**d, "teacher": {**d["teacher"], "iterations": 1200}}, "short.yaml")
    torch.set_num_threads(1)
    online.distill_online(load_study(long), progress=False, out_dir=tmp_path / "ref")
    online.distill_online(load_study(short), progress=False, out_dir=tmp_path / "ext")
    assert json.loads((tmp_path / "ext" / "distill.json").read_text())["teacher"]["iterations"] == 1200
    online.distill_online(load_study(long), progress=False, out_dir=tmp_path / "ext")  # 1200 -> 2400: the new 1200 only
    _same_outputs(tmp_path / "ref", tmp_path / "ext")
    rec = json.loads((tmp_path / "ext" / "distill.json").read_text())["teacher"]
    assert rec["sessions"] == 2 and [h["iteration"] for h in rec["history"]] == [1200, 2400]
    with pytest.raises(ValueError, match="more than teacher.iterations"):  # chains are not shortened
        online.distill_online(load_study(short), progress=False, out_dir=tmp_path / "ext")


def test_bank_stays_evenly_spaced_over_the_whole_chain(tmp_path):
    d = _cfg(tmp_path, iterations=3300, burn_in=100, thin=10, bank_size=4, checkpoint_every=0)
    cfg = study_from_dict(d)
    p = api.prepare(cfg)
    from gped_search.distill.chain import TeacherChain

    ch = TeacherChain(cfg.teacher, cfg.distill, cfg.data, p.bundle, api.teacher_arch_for(p), p.exps, seed=0)
    for until in (700, 1500, 3300):
        ch.run(until, progress=False)
        idx = [s for s, _ in ch.bank]
        gaps = {b - a for a, b in zip(idx, idx[1:])}
        assert gaps == {ch.stride} and idx[0] == ch.stride  # evenly spaced from the start of sampling
        assert 4 <= len(idx) <= 7  # between bank_size and 2 bank_size - 1 snapshots
    assert ch.samples == 320 and ch.stride == 64


def test_torn_newest_generation_falls_back_and_foreign_key_is_refused(tmp_path):
    folder = tmp_path / "c"
    save_checkpoint_generation(folder, 10, {"x": torch.ones(3)}, "k", keep=2)
    save_checkpoint_generation(folder, 20, {"x": torch.zeros(3)}, "k", keep=2)
    newest = folder / "chain-20.pt"
    newest.write_bytes(newest.read_bytes()[:50])  # torn
    it, state = latest_checkpoint(folder, "k")
    assert it == 10 and torch.equal(state["x"], torch.ones(3))
    with pytest.raises(ValueError, match="other settings"):
        latest_checkpoint(folder, "other")


def _cli(*args, cwd=ROOT):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "gped_search.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def test_study_extends_its_teacher_and_trials_record_which_teacher(tmp_path):
    d = _cfg(tmp_path, iterations=1200)
    d["distill"].update({"target_mode": "cached", "steps": 60})
    d["prune"]["finetune_steps"] = 0
    d["search"]["space"] = {"mlp_depth": 1, "mlp_width": [8, 16], "lambda_g": 0.0}
    study = _write(tmp_path, d)
    r = _cli("run", str(study), "--no-progress", "--no-report", "--threads", "1")
    assert r.returncode == 0, r.stderr
    d["teacher"]["iterations"] = 2400
    d["search"]["n_trials"] = 4
    _write(tmp_path, d)
    r = _cli("run", str(study), "--no-progress", "--no-report", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "extending the chain from 1200 to 2400" in r.stderr
    from gped_search.posterior.artifact import load_teacher

    art = load_teacher(tmp_path / "chain" / "teacher.pt")
    assert art.stats["iterations"] == 2400 and art.stats["extended_from"] == 1200
    st = _cli("status", str(study), "--json")
    info = json.loads(st.stdout)
    used = info["teachers_used"]
    assert sorted(int(k.split("@")[1]) for k in used) == [1200, 2400] and sum(used.values()) == 4
    assert info["chains"]["teacher chain"]["state"] == "done"
    text = _cli("status", str(study)).stdout
    assert "different teachers" in text and "teacher chain: done, iteration 2,400 of 2,400" in text
    assert _cli("report", str(study)).returncode == 0
    assert "trained against different teachers" in (tmp_path / "chain" / "summary.md").read_text()
    # the extended chain equals one sampled to 2400 from the start (same posterior means, bank)
    d2 = {**d, "name": "direct"}
    p = api.prepare(study_from_dict(d2))
    direct = api.sample_teacher(p, progress=False)
    assert all(torch.equal(direct.test[k], art.test[k]) for k in direct.test)
    assert all(torch.equal(direct.bank[k], art.bank[k]) for k in direct.bank)
    assert all(torch.equal(direct.transfer[k], art.transfer[k]) for k in direct.transfer)


@pytest.mark.system
def test_a_study_worker_killed_mid_chain_is_resumed_by_the_next_run(tmp_path):
    """The teacher lock dies with its holder; the next `run` resumes the chain from its checkpoint and
    ends with the artifact an uninterrupted chain gives."""
    d = _cfg(tmp_path, iterations=1600)
    d["distill"].update({"target_mode": "cached", "steps": 30})
    d["prune"]["finetune_steps"] = 0
    d["search"]["space"] = {"mlp_depth": 1, "mlp_width": [8, 16], "lambda_g": 0.0}
    d["search"]["n_trials"] = 1
    study = _write(tmp_path, d)
    runner = RUNNER.replace("online.distill_online(load_study(study), progress=False, out_dir=out)",
                            "from gped_search.search import run_study\nrun_study(load_study(study), progress=False)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", runner, "iteration", "1000", str(study), "-"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL
    st = _cli("status", str(study)).stdout
    assert "teacher chain: paused" in st and "resumes from the checkpoint at 800" in st
    r = _cli("run", str(study), "--no-report", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "resuming the chain at iteration 800 of 1600" in r.stderr
    from gped_search.posterior.artifact import load_teacher

    art = load_teacher(tmp_path / "chain" / "teacher.pt")
    direct = api.sample_teacher(api.prepare(study_from_dict({**d, "name": "direct"})), progress=False)
    assert all(torch.equal(direct.test[k], art.test[k]) for k in direct.test)
    assert all(torch.equal(direct.bank[k], art.bank[k]) for k in direct.bank)
    assert art.stats["sessions"] == 2


def test_a_chain_with_other_settings_or_a_shorter_total_is_one_error_line(tmp_path):
    d = _cfg(tmp_path, iterations=800, checkpoint_every=None)
    study = _write(tmp_path, d)
    out = tmp_path / "o"
    assert _cli("distill", str(study), "--out", str(out), "--no-progress").returncode == 0
    _write(tmp_path, {**d, "distill": {**d["distill"], "lr": 0.01}})
    r = _cli("distill", str(study), "--out", str(out), "--no-progress")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "other settings" in lines[0] and "--restart" in lines[0]
    assert list_generations(out / online.DISTILL_CHAIN_DIR)  # nothing recorded was lost
    _write(tmp_path, {**d, "teacher": {**d["teacher"], "iterations": 400}})
    r = _cli("distill", str(study), "--out", str(out), "--no-progress")
    assert r.returncode == 2 and "more than teacher.iterations=400" in r.stderr.strip().splitlines()[0]
    r = _cli("distill", str(study), "--out", str(out), "--no-progress", "--restart")
    assert r.returncode == 0, r.stderr
    assert list_generations(out / online.DISTILL_CHAIN_DIR)[-1][0] == 400


def _stop_once_past(thinned, t: int):
    """``TeacherChain._thinned`` that raises KeyboardInterrupt once, at the first thinned sample past ``t``."""
    fired = [False]

    def stop(self):
        thinned(self)
        if self.t >= t and not fired[0]:
            fired[0] = True
            raise KeyboardInterrupt

    return stop


def test_polyak_student_is_the_mean_of_its_weights_and_resumes(tmp_path, monkeypatch):
    """distill.online_average polyak: the final student equals the brute-force mean of its weights after
    each online step past online_average_start; a run stopped mid-chain and resumed gives the same student."""
    from gped_search.distill import chain as chain_mod
    from gped_search.distill.student import LockstepTrainer

    d = _cfg(tmp_path, iterations=1500, checkpoint_every=300)
    d["distill"].update({"online_average": "polyak", "online_average_start": 0.5})
    study = _write(tmp_path, d)
    torch.set_num_threads(1)
    snaps = []
    orig_step = LockstepTrainer.step

    def step(self, x, targets):
        out = orig_step(self, x, targets)
        snaps.append([p.detach().clone() for p in self.trainers[0].model.parameters()])
        return out

    monkeypatch.setattr(LockstepTrainer, "step", step)
    online.distill_online(load_study(study), progress=False, out_dir=tmp_path / "ref")
    monkeypatch.setattr(LockstepTrainer, "step", orig_step)
    total = (1500 - d["teacher"]["burn_in"]) // d["distill"]["every"]
    assert len(snaps) == total
    start = int(0.5 * total)  # steps numbered 1..total; averaged from step start + 1 on
    mean = [torch.stack([s[i] for s in snaps[start:]]).mean(0) for i in range(len(snaps[0]))]
    final = torch.load(tmp_path / "ref" / "distill_student.pt", weights_only=True)["state_dict"]
    for m, (k, v) in zip(mean, ((k, v) for k, v in final.items() if not k.endswith("_mask"))):
        torch.testing.assert_close(v, m, rtol=1e-5, atol=1e-6, msg=k)
    assert not torch.allclose(mean[0], snaps[-1][0])  # the average is not the last student

    monkeypatch.setattr(chain_mod.TeacherChain, "_thinned", _stop_once_past(chain_mod.TeacherChain._thinned, 1100))
    with pytest.raises(KeyboardInterrupt):
        online.distill_online(load_study(study), progress=False, out_dir=tmp_path / "resumed")
    online.distill_online(load_study(study), progress=False, out_dir=tmp_path / "resumed")
    _same_outputs(tmp_path / "ref", tmp_path / "resumed")


def test_test_loglik_trace_is_each_sample_s_log_likelihood_and_resumes(tmp_path, monkeypatch):
    """distill writes teacher_test_loglik_trace.csv: per thinned sample, the mean test log-likelihood of that
    sample alone (checked against the logits the chain saw); a run stopped mid-chain and resumed writes the
    same trace as one that was not stopped."""
    import pandas as pd

    from gped_search.distill import chain as chain_mod

    d = _cfg(tmp_path, iterations=900, checkpoint_every=300)
    study = _write(tmp_path, d)
    torch.set_num_threads(1)
    seen = []
    orig = chain_mod.TeacherChain._thinned

    def spy(self):
        z = self.sampler.logits(self.inputs["test"])
        seen.append(torch.log_softmax(z[0], -1)[torch.arange(z.shape[1]), self.bundle.test.y].mean().item())
        orig(self)

    monkeypatch.setattr(chain_mod.TeacherChain, "_thinned", spy)
    online.distill_online(load_study(study), progress=False, out_dir=tmp_path / "ref")
    monkeypatch.setattr(chain_mod.TeacherChain, "_thinned", orig)
    ref = pd.read_csv(tmp_path / "ref" / online.TRACE_FILE)
    assert len(ref) == len(seen) == (900 - d["teacher"]["burn_in"]) // d["teacher"]["thin"]
    assert list(ref["sample"]) == list(range(len(seen))) and set(ref["chain"]) == {0}
    assert ref["test_loglik"].to_numpy() == pytest.approx(seen, abs=2e-6)
    rec = json.loads((tmp_path / "ref" / "distill.json").read_text())
    assert "test_loglik_trace" not in rec["teacher"]  # the trace lives in its CSV, not in the record

    monkeypatch.setattr(chain_mod.TeacherChain, "_thinned", _stop_once_past(orig, 500))
    with pytest.raises(KeyboardInterrupt):
        online.distill_online(load_study(study), progress=False, out_dir=tmp_path / "cut")
    monkeypatch.setattr(chain_mod.TeacherChain, "_thinned", orig)
    online.distill_online(load_study(study), progress=False, out_dir=tmp_path / "cut")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "cut" / online.TRACE_FILE), ref)
