"""int8 students through ONNX Runtime (issue 29): outputs close to fp32, real file sizes, an int8
trial's record recomputed from the ONNX session, export -> a reproduce script without torch."""

from __future__ import annotations

import importlib.util
import json
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import QUICKSTART, TINY, one_error_line, tiny_engine

from gped_search.errors import ConfigError

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="needs the onnx extra (pip install gped-search[onnx])",
)

HEADS = (("predictive", 0), ("expected_entropy", 1))
TOL = 0.03
"""Max abs deviation of an int8 output head from fp32 on real digits inputs, relative to the head's
largest fp32 magnitude (at least 1). The logits of these trained students span about +-20-30;
measured: MLP (dynamic) 0.24 / 29 = 0.8 %, CNN (static QDQ) 0.27 / 18 = 1.5 %; entropy head < 0.01."""
AGREE = 0.97
"""Fraction of test images whose int8 and fp32 argmax agree (measured: 1.0)."""


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: tiny models on a busy 2-core machine run many times slower on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    from gped_search.data.datasets import load_split

    return load_split("digits", True), load_split("digits", False)


def _trained(family: str, train) -> torch.nn.Module:
    """A small student fitted to the digits labels for 150 Adam steps: weights with real structure."""
    from gped_search.models import build, student_arch

    torch.manual_seed(0)
    model = build(student_arch(family, (1, 8, 8), 10, HEADS, widths=(32, 16), m1=1.0, m2=0.5, kernel=3, padding=1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, train.x.shape[0], (64,), generator=g)
        logits, ent = model(train.x[idx])
        loss = torch.nn.functional.cross_entropy(logits, train.y[idx]) + (ent - 0.3).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_int8_outputs_close_to_fp32_on_real_inputs(family, digits, tmp_path):
    from gped_search.quant import MODES, OrtStudent, calibration_inputs, cpu_vnni, quantize_student

    train, test = digits
    model = _trained(family, train)
    calib = calibration_inputs(train.x, 256)
    assert calib.shape[0] == 256
    model.train()
    res = quantize_student(model, calib if family == "cnn" else None, tmp_path)
    assert model.training  # left as it was
    model.eval()
    assert res.mode == MODES[family] and res.path.is_file()
    assert res.bytes == res.path.stat().st_size and res.fp32_bytes == res.fp32_path.stat().st_size
    assert res.bytes < res.fp32_bytes
    assert res.calibration_size == (256 if family == "cnn" else 0)
    x86 = platform.machine().lower() in {"x86_64", "amd64"}
    assert res.vnni == cpu_vnni() and res.reduce_range == (x86 and cpu_vnni() is not True)
    got = OrtStudent(res.path, model.arch)(test.x)
    with torch.no_grad():
        ref = model(test.x)
    for a, b in zip(got, ref):
        dev, scale = (a - b).abs().max().item(), max(1.0, b.abs().max().item())
        assert dev <= TOL * scale
    assert (got[0].argmax(1) == ref[0].argmax(1)).float().mean().item() >= AGREE
    assert (ref[0].argmax(1) == test.y).float().mean().item() > 0.8  # the student really learned


def test_cpu_vnni_reads_the_flags(tmp_path):
    from gped_search.quant import cpu_vnni

    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert cpu_vnni(f) is True
    f.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert cpu_vnni(f) is False
    assert cpu_vnni(tmp_path / "missing") is None


def test_bad_input_is_one_line_naming_the_key(digits, tmp_path, monkeypatch):
    from gped_search import engine
    from gped_search.config import load_study
    from gped_search.quant import calibration_inputs, quantize_student
    from gped_search.quant import onnx as qonnx

    train, _ = digits
    cnn = _trained("cnn", train)
    for call, key in [
        (lambda: quantize_student(cnn, None, tmp_path), "student.calibration_size"),
        (lambda: calibration_inputs(train.x, 0), "student.calibration_size"),
        (lambda: load_study("studies/quickstart.yaml", ["student.calibration_size=0"]), "student.calibration_size"),
        (lambda: load_study("studies/quickstart.yaml", ["search.space.precision=[fp16]"]), "search.space.precision"),
        (
            lambda: load_study(  # a latency objective over [fp32, int8] needs ONNX Runtime timing
                "studies/quickstart.yaml", ["search.space.precision=[fp32, int8]", "search.objectives.latency_ms=minimize"]
            ),
            "search.latency_backend",
        ),
    ]:
        with pytest.raises(ConfigError) as e:
            call()
        msg = str(e.value)
        assert msg.split(": ", 1)[-1 if msg.startswith("--set") else 0].startswith(key) and "\n" not in msg, msg
    odd = _trained("mlp", train)
    odd.arch = type(odd.arch)(**{**odd.arch.__dict__, "family": "rnn"})  # a family with no int8 mode
    monkeypatch.setattr("gped_search.quant.int8.arch_of", lambda m: m.arch)
    with pytest.raises(ConfigError, match=r"^student\.family: 'rnn' cannot be quantized"):
        quantize_student(odd, None, tmp_path)
    # without onnxruntime: one line naming the extra, raised by prepare (before data or any teacher)
    real = importlib.util.find_spec
    monkeypatch.setattr(qonnx.importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a))
    cfg = load_study(
        "studies/quickstart.yaml",
        ["search.space.precision=[fp32, int8]", "search.latency_backend=onnxruntime", f"report_dir={tmp_path}"],
    )
    monkeypatch.setattr("gped_search.engine.context.make_bundle", lambda *a: pytest.fail("data loaded before the check"))
    with pytest.raises(ConfigError) as e:
        engine.prepare(cfg)
    assert (
        str(e.value) == "search.space.precision: int8: needs onnxruntime, not installed: pip install gped-search[onnx]"
    )


@pytest.fixture(scope="module")
def int8_engine():
    yield from tiny_engine("student.precision=int8", "student.widths=[32]", "distill.steps=60")


def test_int8_trial_record_is_the_onnx_sessions(int8_engine, tmp_path):
    """KL, accuracy and bytes of an int8 trial recomputed from a fresh ONNX Runtime session in numpy."""
    import onnxruntime as ort

    from gped_search import engine
    from gped_search.quant import quantize_student

    cfg, p, teacher = int8_engine
    model, rec = engine.train_trial(p, teacher, cfg.student, cfg.prune, seed=0, steps=60)
    assert rec["precision"] == "int8" and rec["quant_mode"] == "dynamic" and rec["latency_backend"] == "onnxruntime"
    res = quantize_student(model, None, tmp_path)  # an MLP: dynamic, no calibration; deterministic: the same file
    assert rec["bytes"] == res.bytes == res.path.stat().st_size
    assert rec["bytes"] < rec["bytes_onnx_fp32"]
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    for split, means, prefix in [(p.bundle.val, teacher.val, ""), (p.bundle.test, teacher.test, "test_")]:
        logits = sess.run(None, {"x": split.x.cpu().numpy()})[0].astype(np.float64)
        z = logits - logits.max(1, keepdims=True)
        p_s = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        p_t = means["predictive"].cpu().double().numpy()
        kl = (p_t * (np.log(np.clip(p_t, 1e-12, None)) - np.log(np.clip(p_s, 1e-12, None)))).sum(1).mean()
        assert rec[f"{prefix}kl"] == pytest.approx(kl, rel=1e-4, abs=1e-6)
        acc = (logits.argmax(1) == split.y.cpu().numpy()).mean()
        assert rec[f"{prefix}student_acc"] == pytest.approx(acc, abs=1e-6)  # float32 mean
    # the fp32 figures stay beside: the fp32 model's own KL, a little different from the int8 one
    from gped_search.metrics.quality import evaluate

    fp32 = evaluate(model, p.bundle.val.x, p.bundle.val.y, teacher.val)
    assert rec["fp32_kl"] == pytest.approx(fp32["kl"], rel=1e-6)
    assert rec["fp32_kl"] != rec["kl"] and "fp32_test_kl" in rec and "fp32_expected_entropy_mae" in rec


# A fresh interpreter (-I) where importing torch or gped_search fails: the script must not need them.
NO_TORCH = textwrap.dedent("""
    import runpy, sys

    class _Bar:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "gped_search"):
                raise ImportError(name + " must not be needed to reproduce the accuracy")
            return None

    sys.meta_path.insert(0, _Bar())
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


@pytest.mark.parametrize("family,mask", [("mlp", 0), ("cnn", 3)])
def test_export_int8_reproduces_without_torch(family, mask, digits, tmp_path):
    from gped_search.data.transforms import occlude
    from gped_search.exporting import export_student
    from gped_search.quant import calibration_inputs
    from gped_search.seeds import derive_seed

    train, test = digits
    model = _trained(family, train)
    x_test = occlude(test.x, mask, torch.Generator().manual_seed(derive_seed(0, "test-mask")))
    meta = {"config": {"seed": 0, "data": {"dataset": "digits", "mask_size": mask}}, "metrics": {"kl": 0.1}}
    res = export_student(
        model,
        tmp_path,
        ("checkpoint", "onnx-int8"),
        meta=meta,
        calibration=calibration_inputs(train.x, 200),
        test=(x_test, test.y),
    )
    card = json.loads((tmp_path / "model_card.json").read_text())
    q = card["quantization"]
    assert q["precision"] == "int8" and q["mode"] == ("dynamic" if family == "mlp" else "static_qdq")
    assert q["calibration_set"] == ("transfer set" if family == "cnn" else "none (dynamic quantization)")
    assert 0 < q["max_abs_deviation_from_fp32"]["predictive"] <= TOL * 25
    assert q["deviation_measured_on"] == "the test set (360 images)"
    assert card["files"]["onnx-int8"]["bytes"] == (tmp_path / "student.int8.onnx").stat().st_size
    assert "## Quantization" in (tmp_path / "model_card.md").read_text()
    assert res["files"]["reproduce"].is_file()
    r = subprocess.run(
        [sys.executable, "-I", "-c", NO_TORCH, str(res["files"]["reproduce"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"(model card: {q['test_student_acc']:.6f})" in r.stdout


def test_a_study_over_precision_times_in_onnxruntime_and_exports_int8(tmp_path):
    """precision [fp32, int8] with ONNX Runtime latency: both kinds of trial, the front re-timed as ONNX
    Runtime sessions, and exporting an int8 trial writes the int8 file whose accuracy the record states."""
    from gped_search.config import load_study
    from gped_search.search import run_study, trials_frame
    from gped_search.search.export_job import export_trial
    from gped_search.search.results import study_objectives

    cfg = load_study(
        QUICKSTART,
        [
            *TINY,
            "device=cpu",
            f"report_dir={tmp_path}",
            *("search.space.m1=null", "search.space.m2=null", "search.space.lambda_g=null"),
            *("search.space.family=mlp", "search.space.mlp_depth=1", "search.space.mlp_width=24"),
            "search.space.precision=[fp32, int8]",
            "search.sampler=grid",
            "search.latency_backend=onnxruntime",
            "search.objectives={kl: minimize, bytes: minimize, latency_ms: minimize}",
            "search.n_trials=2",
        ],
    )
    study = run_study(cfg, progress=False, threads=1)
    df = trials_frame(study)
    assert sorted(df["precision"]) == ["fp32", "int8"] and set(df["latency_backend"]) == {"onnxruntime"}
    assert (df["bytes"] == df["bytes_onnx_fp32"]).sum() == 1 and df["fp32_kl"].notna().all()
    assert df["on_front"].all()  # int8: fewer bytes; fp32: lower KL
    cal = study.user_attrs["latency_calibration"]  # re-timed together as ONNX Runtime sessions
    assert sorted(cal) == ["0", "1"] and (df["latency_trial_ms"] > 0).all()
    row = df[df["precision"] == "int8"].iloc[0]
    assert row["bytes"] < df[df["precision"] == "fp32"].iloc[0]["bytes"]
    from gped_search.report.writer import front_columns
    from gped_search.search.trial_lines import trial_line

    assert " int8 " in trial_line(study, int(row["number"]))
    assert {"precision", "fp32_kl"} <= set(front_columns(df, study_objectives(study)))
    res = export_trial(cfg, study, tmp_path / "exported", trial=str(int(row["number"])))
    card = res["card"]
    assert "onnx-int8" in card["files"] and card["quantization"]["mode"] == "dynamic" == res["quantization"]["mode"]
    assert card["quantization"]["test_student_acc"] == pytest.approx(row["test_student_acc"], abs=1e-6)


def test_batch_mode_keeps_each_trials_precision(int8_engine):
    """Lockstep batches (search.batch) score each trial at its own precision."""
    import dataclasses

    from gped_search import engine

    cfg, p, teacher = int8_engine
    fp32 = dataclasses.replace(
        cfg, student=dataclasses.replace(cfg.student, precision=type(cfg.student.precision)("fp32"))
    )
    out = engine.train_trials(p, teacher, [cfg, fp32], [0, 1], steps=30)
    (_, rec8), (_, rec32) = out
    assert rec8["precision"] == "int8" and rec8["bytes"] < rec8["bytes_onnx_fp32"] and rec8["kl"] != rec8["fp32_kl"]
    assert (
        rec32["precision"] == "fp32" and rec32["bytes"] == rec32["bytes_onnx_fp32"] and rec32["kl"] == rec32["fp32_kl"]
    )


def test_without_vnni_the_weights_use_reduce_range(digits, tmp_path):
    """On an x86 CPU without VNNI the record says reduce_range, and the outputs stay within twice the
    tolerance: 7-bit weights (measured here: 0.57 / 18 = 3.1 % on the CNN's logits)."""
    from gped_search.quant import OrtStudent, calibration_inputs, quantize_student

    train, test = digits
    model = _trained("cnn", train)
    res = quantize_student(model, calibration_inputs(train.x, 128), tmp_path, vnni=False)
    assert res.vnni is False and res.reduce_range == (platform.machine().lower() in {"x86_64", "amd64"})
    got = OrtStudent(res.path, model.arch)(test.x)
    with torch.no_grad():
        ref = model(test.x)
    for a, b in zip(got, ref):
        assert (a - b).abs().max().item() <= 2 * TOL * max(1.0, b.abs().max().item())


def test_cli_without_onnxruntime_is_one_line_naming_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"  # find_spec('onnxruntime') is None: as if not installed
        "from gped_search.cli import main\n"
        f"sys.exit(main(['run', {QUICKSTART!r}, '--set', 'report_dir={tmp_path}', '--set', 'student.precision=int8']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    line = one_error_line(r.stderr)
    assert (
        line
        == "gped-search: error: student.precision: int8: needs onnxruntime, not installed: pip install gped-search[onnx]"
    )
    assert not (tmp_path / "quickstart" / "teacher.pt").exists()


@pytest.mark.slow
def test_int8_script_reproduces_an_occluded_mnist_accuracy(tmp_path):
    """MNIST with a 7 px occlusion and study seed 3: the torch-free script rebuilds the occluded test set
    from the raw files and the embedded patch positions and matches the card's int8 accuracy."""
    import os
    from pathlib import Path

    from gped_search.config import load_study, to_dict
    from gped_search.data import make_bundle
    from gped_search.exporting import export_student
    from gped_search.models import build, student_arch
    from gped_search.quant import calibration_inputs

    root = Path(os.environ.get("GPED_DATA_ROOT") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip("no MNIST under the data root")
    cfg = load_study("studies/mnist_mlp.yaml", ["data.mask_size=7", "data.ood=null", "seed=3", f"data.root={root}"])
    b = make_bundle(cfg.data, cfg.seed, "cpu")
    torch.manual_seed(0)
    model = build(student_arch("mlp", (1, 28, 28), 10, HEADS, widths=(64,)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        idx = torch.randint(0, b.train.x.shape[0], (128,))
        loss = torch.nn.functional.cross_entropy(model(b.train.x[idx])[0], b.train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    meta = {"config": to_dict(cfg)}
    test = (b.test.x, b.test.y)
    res = export_student(
        model, tmp_path, ("onnx-int8",), meta=meta, calibration=calibration_inputs(b.transfer, 256), test=test
    )
    acc = res["quantization"]["test_student_acc"]
    r = subprocess.run(
        [sys.executable, "-I", "-c", NO_TORCH, str(res["files"]["reproduce"]), "--data-root", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"test accuracy {acc:.6f} on 10000 images" in r.stdout and acc > 0.5
