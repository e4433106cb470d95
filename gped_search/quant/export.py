"""The int8 part of an export (``gped-search export --format onnx-int8``): quantize the student,
measure its deviation from the fp32 student and its accuracy on the test set, and write a
``reproduce_accuracy.py`` that needs only onnxruntime and numpy (plus scikit-learn for digits).

The script rebuilds the test set from the raw data; what PyTorch's generators drew for it (the
digits test indices, occlusion positions) is computed here with the library's own functions and
embedded, so the script needs no torch.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gped_search.data.datasets import DIGITS_SPLIT_SEED
from gped_search.data.recipe import input_recipe
from gped_search.data.transforms import occlusion_positions
from gped_search.models.nets import arch_of
from gped_search.quant.int8 import quantize_student
from gped_search.quant.onnx import OrtStudent
from gped_search.seeds import derive_seed

__all__ = ["INT8_FILE", "write_int8", "int8_script", "ort_script"]

INT8_FILE = "student.int8.onnx"


def _b64(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def write_int8(
    model: nn.Module,
    stage: Path,
    calibration: torch.Tensor | None,
    test: tuple[torch.Tensor, torch.Tensor] | None,
    x: torch.Tensor,
) -> dict:
    """Quantize ``model`` into ``stage/student.int8.onnx``; return the card's ``quantization`` section:
    mode, calibration, CPU, max abs deviation from the fp32 student per head on ``test`` (else on
    the verification batch ``x``) and the int8 test accuracy (with ``test``)."""
    res = quantize_student(model, calibration, stage, name="student")  # student.int8.onnx (= INT8_FILE)
    res.fp32_path.unlink(missing_ok=True)
    arch = arch_of(model)
    ort_model = OrtStudent(stage / INT8_FILE, arch)
    inputs, where = (
        (test[0], f"the test set ({test[0].shape[0]} images)") if test is not None else (x, "the verification batch")
    )
    dev = {name: 0.0 for name in arch.head_names}
    correct = 0
    for i in range(0, inputs.shape[0], 1000):
        xb = inputs[i : i + 1000].detach().cpu().float()
        with torch.no_grad():
            ref = model(xb)
        got = ort_model(xb)
        for name, a, b in zip(arch.head_names, got, ref):
            dev[name] = max(dev[name], float((a.double() - b.double()).abs().max()))
        if test is not None:
            yb = test[1][i : i + 1000].cpu()
            correct += int((got[arch.head_names.index("predictive")].argmax(1) == yb).sum())
    out = {
        "precision": "int8",
        **res.record(),
        "max_abs_deviation_from_fp32": dev,
        "deviation_measured_on": where,
    }
    if test is not None:
        out["test_student_acc"] = correct / max(1, test[1].shape[0])
    return out


_SCRIPT = '''#!/usr/bin/env python3
"""Recompute this {what} student's test accuracy from {file} with onnxruntime and numpy only
(no torch, no gped_search; scikit-learn for the digits data).

    python reproduce_accuracy.py [--data-root PATH]      # PATH holds {raw_folder}/raw/ (torchvision layout)

Test set: {test_split}.
Inputs: {preprocessing}.
Occlusion: {occlusion}.
The digits test indices and occlusion positions were drawn with PyTorch's generators at export
time and are embedded below.
"""

import argparse
import base64
import gzip
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

DATASET = {dataset!r}
MASK = {mask}
HEAD = {head}            # index of the predictive head (logits): accuracy is its argmax
HERE = Path(__file__).resolve().parent
DIGITS_TEST = {digits!r}  # base64 uint16: indices of the test images in load_digits()
POSITIONS = {positions!r}  # base64 uint8: per test image, the occlusion patch's row then column


def test_set(root):
    if DATASET == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        idx = np.frombuffer(base64.b64decode(DIGITS_TEST), dtype="<u2").astype(np.int64)
        x = d.images.astype(np.float32)[:, None] / np.float32(16.0)
        x, y = x[idx], d.target[idx]
    else:
        raw = Path(root) / {raw_folder!r} / "raw"

        def read(name, offset):
            p = raw / name
            data = p.read_bytes() if p.exists() else gzip.open(str(p) + ".gz").read()
            return np.frombuffer(data, dtype=np.uint8, offset=offset).copy()

        x = read("t10k-images-idx3-ubyte", 16).astype(np.float32).reshape(-1, 1, 28, 28) / np.float32(255.0)
        y = read("t10k-labels-idx1-ubyte", 8).astype(np.int64)
    if MASK > 0:
        pos = np.frombuffer(base64.b64decode(POSITIONS), dtype=np.uint8).reshape(-1, 2).astype(np.int64)
        size = min(MASK, x.shape[2], x.shape[3])
        x = x.copy()
        for i, (r, c) in enumerate(pos):
            x[i, :, r:r + size, c:c + size] = 0.0
    return np.ascontiguousarray(x), y


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("GPED_DATA_ROOT", "../shared/data"))
    args = ap.parse_args()
    x, y = test_set(args.data_root)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(HERE / {file!r}), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    logits = np.concatenate([sess.run(None, {{name: x[i:i + 1000]}})[HEAD] for i in range(0, len(x), 1000)])
    acc = float((logits.argmax(axis=1) == y).mean())
    card = json.loads((HERE / "model_card.json").read_text())
    want = (card.get({card_key!r}) or {{}}).get("test_student_acc")
    print(f"test accuracy {{acc:.6f}} on {{len(y)}} images" + ("" if want is None else f" (model card: {{want:.6f}})"))
    if want is not None and abs(acc - want) > 0.5 / len(y):
        print("MISMATCH: the files do not reproduce the card's accuracy", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''

_RAW = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


_TEST_SIZE = {"mnist": 10000, "fashion_mnist": 10000}


def int8_script(config: dict | None, head: int, n_test: int, in_hw: tuple[int, int]) -> str | None:
    """The onnxruntime + numpy accuracy script for ``student.int8.onnx``; None for unknown data."""
    return ort_script(config, head, in_hw, n_test=n_test)


def ort_script(
    config: dict | None,
    head: int,
    in_hw: tuple[int, int],
    *,
    file: str = INT8_FILE,
    n_test: int | None = None,
) -> str | None:
    """The onnxruntime + numpy accuracy script for the ONNX ``file`` (``student.int8.onnx``: checks the
    card's ``quantization.test_student_acc``; ``student.onnx``: its ``metrics.test_student_acc``);
    None for unknown data. ``n_test`` defaults to the dataset's test-set size."""
    data = (config or {}).get("data") or {}
    name = str(data.get("dataset", "")).lower()
    if name != "digits" and name not in _RAW:
        return None
    if n_test is None:
        n_test = 1797 - int(0.8 * 1797) if name == "digits" else _TEST_SIZE[name]
    seed = int((config or {}).get("seed", 0))
    mask = int(data.get("mask_size", 0) or 0)
    digits = ""
    if name == "digits":
        perm = torch.randperm(1797, generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
        digits = _b64(perm[int(0.8 * 1797) :].numpy(), "<u2")
    positions = ""
    if mask > 0:
        h, w = in_hw
        g = torch.Generator().manual_seed(derive_seed(seed, "test-mask"))
        positions = _b64(occlusion_positions(n_test, h, w, min(mask, h, w), g).numpy(), "u1")
    int8 = file == INT8_FILE
    return _SCRIPT.format(
        file=file,
        what="int8" if int8 else "fp32 ONNX",
        card_key="quantization" if int8 else "metrics",
        dataset=name,
        mask=mask,
        head=int(head),
        digits=digits,
        positions=positions,
        raw_folder=_RAW.get(name, ""),
        **input_recipe(config),
    )
