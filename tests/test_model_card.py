"""The model card leads with what a deployer needs (issue 28, item 12), and the ONNX accuracy check runs
without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from gped_search.exporting import export_student
from gped_search.models import build, student_arch

HEADS = (("predictive", 10), ("expected_entropy", 1))
METRICS = {
    "selection_split": "validation",
    "kl": 0.051, "student_acc": 0.95, "student_nll": 0.2, "student_ece": 0.02,
    "test_kl": 0.0612, "test_student_acc": 0.9361, "test_student_nll": 0.2345, "test_student_ece": 0.0311,
    "latency_ms": 0.0412, "latency_p10_ms": 0.04, "latency_p90_ms": 0.05, "latency_batch": 1,
    "latency_device": "cpu", "latency_machine": "AMD EPYC 7B13, 2 logical CPUs", "teacher_iterations": 10000,
    **{f"other_metric_{i}": i / 10 for i in range(40)},  # the raw dump the card used to end in
}


def _model():
    torch.manual_seed(0)
    return build(student_arch("mlp", (1, 8, 8), 10, HEADS, widths=(16,))).eval()


def test_the_card_leads_with_deployment_figures_use_and_limitations(tmp_path):
    meta = {"study": "quickstart", "trial": 3, "metrics": METRICS,
            "config": {"seed": 0, "data": {"dataset": "digits", "mask_size": 0}}}
    res = export_student(_model(), tmp_path, ("checkpoint", "pt2"), meta=meta)
    card = res["card"]
    d = card["deployment"]
    assert d["test_accuracy"] == 0.9361 and d["test_nll"] == 0.2345 and d["test_ece"] == 0.0311
    assert d["test_kl_to_teacher"] == 0.0612 and d["latency_ms"] == 0.0412
    assert d["params"] == card["architecture"]["n_params"] and d["bytes_fp32"] > 0
    assert "AMD EPYC 7B13" in d["latency_measured_on"]
    assert set(d["file_bytes"]) == {"student.pt", "student.pt2"}
    assert any("digits" in u for u in card["intended_use"]) and len(card["limitations"]) >= 3
    md = (tmp_path / "model_card.md").read_text()
    order = [md.index(h) for h in ("## Deployment figures", "## Intended use", "## Limitations", "## Outputs",
                                   "## Input", "## Files", "## Loading", "## Appendix")]
    assert order == sorted(order)
    assert md.index("## Deployment figures") < 300  # right after the title and one sentence
    head = md[: md.index("## Outputs")]
    for figure in ("| test accuracy | 93.61 % |", "| test NLL [nats] | 0.2345 |", "| test ECE | 0.0311 |",
                   "| test KL to the teacher [nats] | 0.0612 |", "| latency at batch 1 | 0.0412 ms",
                   "AMD EPYC 7B13"):
        assert figure in head, figure
    assert "other_metric_3" not in head and "- other_metric_3: 0.3" in md[md.index("## Appendix"):]


def test_without_a_recorded_machine_the_card_says_so_and_omits_missing_figures(tmp_path):
    meta = {"metrics": {"test_student_acc": 0.9, "latency_ms": 0.03}}
    card = export_student(_model(), tmp_path, ("checkpoint",), meta=meta)["card"]
    d = card["deployment"]
    assert "test_nll" not in d and "not recorded" in d["latency_measured_on"]
    assert "Out-of-distribution detection was not measured" in " ".join(card["limitations"])


# A fresh interpreter (-I) where importing torch or gped_search fails. (Not sys.modules["torch"] = None:
# scipy, under scikit-learn, reads sys.modules["torch"].Tensor when the key exists.)
NO_TORCH = textwrap.dedent("""
    import runpy, sys

    class _Bar:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "gped_search"):
                raise ImportError(name + " must not be needed to reproduce the accuracy")
            return None

    sys.meta_path.insert(0, _Bar())
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


@pytest.mark.parametrize("mask", [0, 3])
def test_the_onnx_accuracy_check_needs_only_onnxruntime_and_numpy(mask, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from gped_search.data.datasets import load_split
    from gped_search.data.transforms import occlude
    from gped_search.seeds import derive_seed

    test = load_split("digits", False)
    x = occlude(test.x, mask, torch.Generator().manual_seed(derive_seed(0, "test-mask")))
    model = _model()
    with torch.no_grad():
        acc = float((model(x)[0].argmax(1) == test.y).float().mean())
    meta = {"metrics": {"test_student_acc": acc}, "config": {"seed": 0, "data": {"dataset": "digits",
                                                                                  "mask_size": mask}}}
    res = export_student(model, tmp_path, ("checkpoint", "onnx"), meta=meta)
    script = res["files"]["reproduce"]
    assert "import torch" not in script.read_text()
    r = subprocess.run([sys.executable, "-I", "-c", NO_TORCH, str(script)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"test accuracy {acc:.6f} on 360 images (model card: {acc:.6f})" in r.stdout
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert "metrics.test_student_acc" in card["input"]["reproduce"]
    card["metrics"]["test_student_acc"] = acc + 0.1  # a card the files do not reproduce
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    bad = subprocess.run([sys.executable, "-I", "-c", NO_TORCH, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and "MISMATCH" in bad.stderr


def test_latency_records_the_machine_but_not_the_host():
    import socket

    from gped_search.metrics.cost import measure_latency

    lat = measure_latency(_model(), (1, 8, 8), repeats=3, warmup=1, threads=1)
    assert lat["machine"] and "logical CPUs" in lat["machine"]
    assert socket.gethostname() not in lat["machine"]
