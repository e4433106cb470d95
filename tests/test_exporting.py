"""Student export: checkpoint + torch.export program + model card, verified on reload."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from gped_search.checkpoints import load_checkpoint
from gped_search.exporting import ExportError, export_student, verify_pt2
from gped_search.models import arch_of, build, student_arch
from gped_search.prune import prune_model

HEADS = (("predictive", 10), ("expected_entropy", 1))
META = {
    "study_name": "digits-mlp",
    "trial_number": 7,
    "config": {"family": "mlp", "lr": 1e-3},
    "metrics": {"test_nll": 0.41, "test_acc": 0.93},
    "cost": {"params": 1234, "macs": 5678},
}


def make(family: str):
    torch.manual_seed(0)
    if family == "mlp":
        return build(student_arch("mlp", (1, 8, 8), 10, HEADS, widths=(16, 12)))
    if family == "cnn":
        return build(student_arch("cnn", (1, 8, 8), 10, HEADS, m1=1.0, m2=0.5, kernel=3, padding=1))
    model = make("mlp")  # "pruned": zero the incoming weights of some units, then prune them away
    with torch.no_grad():
        model.body[1].weight[[1, 4, 9]] = 0.0
        model.body[1].bias[[1, 4, 9]] = 0.0
        model.body[3].weight[[0, 5]] = 0.0
        model.body[3].bias[[0, 5]] = 0.0
    res = prune_model(model, torch.rand(2, 1, 8, 8), rule="threshold", tau=1e-3)
    assert res.kept == [13, 10] and model.arch.hidden == (13, 10)
    model.pruning = res.to_dict()
    return model


def inputs(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(3))


# Runs in a fresh interpreter that can import torch but is barred from importing gped_search.
PLAIN_TORCH = textwrap.dedent("""
    import sys

    class _Bar:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "gped_search":
                raise ImportError("gped_search must not be needed to load the .pt2")
            return None

    sys.meta_path.insert(0, _Bar())
    import torch

    for pt2, ref in zip(sys.argv[1::2], sys.argv[2::2]):
        program = torch.export.load(pt2)
        ref = torch.load(ref, weights_only=True)
        with torch.no_grad():
            for x, expected in zip(ref["xs"], ref["outs"]):
                out = program.module()(x)
                assert isinstance(out, tuple) and len(out) == len(expected), out
                for a, b in zip(out, expected):
                    assert a.shape == b.shape, (a.shape, b.shape)
                    assert (a - b).abs().max().item() <= 1e-5
        print("PLAIN-TORCH-OK", pt2, len(ref["xs"]))
    assert "gped_search" not in sys.modules and not any(m.startswith("gped_search.") for m in sys.modules)
""")
FAMILIES = ("mlp", "cnn", "pruned")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each family exported (checkpoint + pt2), with its model and the expected outputs saved."""
    out = {}
    for family in FAMILIES:
        root = tmp_path_factory.mktemp(family)
        model = make(family)
        meta = dict(META, pruning=getattr(model, "pruning", None))
        res = export_student(model, root / "export", meta=meta)
        assert model.training  # the caller's model is left as it was
        model.eval()
        # expected outputs from the in-memory model, at the verification batch size and others
        xs = [inputs(8), inputs(3), inputs(1)] if res["dynamic_batch"] else [inputs(8)]
        with torch.no_grad():
            outs = [tuple(model(x)) for x in xs]
        torch.save({"xs": xs, "outs": outs}, root / "expected.pt")
        out[family] = (model, res, root)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_export_checkpoint_and_pt2(family, exported):
    model, res, root = exported[family]
    out = root / "export"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["model_card.json", "model_card.md", "student.pt", "student.pt2"]  # no staging left
    ver = res["verification"]
    assert ver["checkpoint"] <= 1e-5 and ver["pt2"] <= 1e-5
    if res["dynamic_batch"]:
        assert ver["pt2_batch1"] <= 1e-5
    for fmt in ("checkpoint", "pt2"):
        assert res["sha256"][fmt] == hashlib.sha256(res["files"][fmt].read_bytes()).hexdigest()

    loaded, ck = load_checkpoint(out / "student.pt")
    assert arch_of(loaded) == arch_of(model) and ck["metrics"] == META["metrics"]
    assert ck["extra"]["study_name"] == "digits-mlp" and ck["extra"]["trial_number"] == 7
    x = inputs(8)
    with torch.no_grad():
        for a, b in zip(loaded(x), model(x)):
            assert torch.equal(a, b)
    if family == "pruned":
        assert ck["pruning"]["kept"] == [13, 10] and loaded.arch.hidden == (13, 10)


def test_pt2_loads_with_plain_torch(exported, tmp_path):
    """One fresh interpreter (cwd elsewhere, no PYTHONPATH, gped_search imports barred) loads every
    family's .pt2 and reproduces the saved outputs, also at other batch sizes when dynamic."""
    args = []
    for family in FAMILIES:
        _, res, root = exported[family]
        args += [str(res["files"]["pt2"]), str(root / "expected.pt")]
    (tmp_path / "check.py").write_text(PLAIN_TORCH)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(tmp_path / "check.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("PLAIN-TORCH-OK") == len(FAMILIES), proc.stdout


def test_model_card_contents(tmp_path):
    model = make("cnn")
    res = export_student(model, tmp_path, meta=META, example=inputs(4))
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card == json.loads(json.dumps(res["card"]))
    for key in ("architecture", "heads", "derived", "input", "metrics", "cost", "study", "files",
                "verification", "torch_version", "dynamic_batch"):
        assert key in card, key
    arch = arch_of(model)
    assert card["architecture"]["description"] == arch.describe()
    assert card["architecture"]["arch"] == arch.to_dict()
    heads = {h["name"]: h for h in card["heads"]}
    assert heads["predictive"]["dim"] == 10 and "averaged over the posterior" in heads["predictive"]["meaning"]
    assert "nats" in heads["expected_entropy"]["meaning"] and "aleatoric" in heads["expected_entropy"]["meaning"]
    assert any("epistemic" in d and "mutual information" in d for d in card["derived"])
    assert card["input"]["shape"] == ["N", 1, 8, 8] and "[0, 1]" in card["input"]["preprocessing"]
    assert card["metrics"] == META["metrics"] and card["cost"] == META["cost"]
    assert card["study"] == {"name": "digits-mlp", "trial_number": 7}
    assert card["torch_version"] == torch.__version__
    assert card["verification"]["batch"] == 4 and card["verification"]["atol"] == 1e-5
    for f in card["files"].values():
        assert f["sha256"] == hashlib.sha256((tmp_path / f["name"]).read_bytes()).hexdigest()
        assert len(f["load"].splitlines()) == 3
    md = (tmp_path / "model_card.md").read_text()
    assert "digits-mlp / trial 7" in md and card["files"]["pt2"]["sha256"] in md
    assert "torch.export.load" in md and "load_checkpoint" in md


def test_custom_head_and_checkpoint_input(tmp_path):
    torch.manual_seed(0)
    model = build(student_arch("mlp", (1, 8, 8), 10, (("predictive", 10), ("my_expectation", 3)),
                               widths=(8,)))
    export_student(model, tmp_path / "a", formats=("checkpoint",), meta={"metrics": {"nll": 1.0}})
    res = export_student(tmp_path / "a" / "student.pt", tmp_path / "b", formats=("pt2",), meta={})
    card = res["card"]
    assert card["metrics"] == {"nll": 1.0}  # taken from the checkpoint
    assert card["heads"][1]["meaning"].startswith("user-defined posterior expectation")
    assert card["heads"][1]["dim"] == 3 and card["derived"] == []
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["model_card.json", "model_card.md",
                                                                  "student.pt2"]


def test_onnx_without_onnx_package(tmp_path, monkeypatch):
    import gped_search.exporting as exporting

    monkeypatch.setattr(exporting, "_onnx_missing", lambda: ["onnx", "onnxscript"])  # as on a bare install
    with pytest.raises(ExportError, match=r"pip install onnx onnxscript") as e:
        export_student(make("mlp"), tmp_path, formats=("checkpoint", "pt2", "onnx"), meta=META)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # refused before writing anything


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_onnx_round_trip_matches_the_pt2_with_a_dynamic_batch(tmp_path, family, capfd):
    """The test extras install onnx, onnxscript and onnxruntime: the ONNX file runs in onnxruntime at
    batch sizes other than the export example's, within 1e-5 of the .pt2 program, and quietly."""
    ort = pytest.importorskip("onnxruntime")
    model = make(family)
    res = export_student(model, tmp_path, formats=("checkpoint", "pt2", "onnx"), meta=META)
    assert res["dynamic_batch"] is True and res["verification"]["onnx"] <= 1e-5
    assert capfd.readouterr().out.count("[torch.onnx]") == 0  # no exporter chatter
    program = torch.export.load(str(tmp_path / "student.pt2")).module()
    sess = ort.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for batch in (1, 3, 17):
        x = torch.rand(batch, *model.arch.in_shape)
        want = program(x)
        want = want if isinstance(want, (tuple, list)) else (want,)
        got = sess.run(None, {name: x.numpy()})
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == tuple(w.shape)
            assert float((torch.from_numpy(g) - w.detach()).abs().max()) <= 1e-5


def test_bad_arguments(tmp_path):
    with pytest.raises(ExportError, match="unknown export format"):
        export_student(make("mlp"), tmp_path, formats=("tflite",), meta={})
    with pytest.raises(ExportError, match="example has shape"):
        export_student(make("mlp"), tmp_path, meta={}, example=torch.rand(2, 3, 8, 8))
    with pytest.raises(ExportError, match="no such checkpoint"):
        export_student(tmp_path / "missing.pt", tmp_path / "out", meta={})


def test_corrupted_pt2_fails_verification(tmp_path):
    model = make("mlp").eval()
    res = export_student(model, tmp_path, formats=("pt2",), meta={})
    path = res["files"]["pt2"]
    x = inputs(4)
    with torch.no_grad():
        expected = tuple(model(x))
    assert verify_pt2(path, x, expected) <= 1e-5

    wrong = (expected[0] + 0.5, expected[1])
    with pytest.raises(ExportError, match="differ"):
        verify_pt2(path, x, wrong, atol=1e-5)
    assert verify_pt2(path, x, wrong) == pytest.approx(0.5, abs=1e-5)

    data = path.read_bytes()
    for name, bad in [("trunc.pt2", data[: len(data) // 2]), ("random.pt2", os.urandom(2048))]:
        (tmp_path / name).write_bytes(bad)
        with pytest.raises(ExportError, match=name) as e:
            verify_pt2(tmp_path / name, x, expected)
        assert "\n" not in str(e.value)


def test_model_card_separates_selection_and_test_metrics_and_names_linear_heads(tmp_path):
    from gped_search.models import build, mlp_arch

    arch = mlp_arch((1, 8, 8), 10, (16,), (("predictive", 0), ("expected_entropy", 1), ("margin", 1)))
    from dataclasses import replace as _replace

    model = build(_replace(arch, linear_heads=("margin",), temperature=2.0)).eval()
    meta = {"metrics": {"kl": 0.1, "selection_split": "validation", "test_kl": 0.12}}
    export_student(model, tmp_path, formats=("checkpoint",), meta=meta)
    md = (tmp_path / "model_card.md").read_text()
    assert "| `margin` | 1 | linear (any sign)" in md and "logits at temperature 2" in md
    sel = md.index("Metrics on the validation split")
    test = md.index("Test-set metrics (reported apart, never used for selection)")
    assert sel < md.index("- kl: 0.1") < test < md.index("- test_kl: 0.12")
