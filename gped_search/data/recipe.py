"""How a study's inputs are made, in words and as a standalone script (for model cards).

:func:`input_recipe` states the exact preprocessing and test-split recipe of a dataset, as
:func:`gped_search.data.make_bundle` applies them; :func:`reproduce_script` writes a Python script
that rebuilds the test set with plain PyTorch (and scikit-learn for the embedded digits) and
recomputes an exported student's test accuracy from its ``.pt2`` or ``.onnx`` file, without
gped_search. The constants are the library's own; a test checks the script against the library.
"""

from __future__ import annotations

from gped_search.seeds import STREAMS

from .datasets import DIGITS_SPLIT_SEED
from .transforms import VAL_SEED

TEST_MASK_STREAM = STREAMS["test-mask"][1]
assert STREAMS["test-mask"][0] == 7919  # the script below spells the formula out

__all__ = ["input_recipe", "reproduce_script"]

_RAW = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def input_recipe(config: dict | None) -> dict:
    """``preprocessing``, ``test_split`` and ``occlusion`` of a study's data, as plain sentences."""
    data = (config or {}).get("data") or {}
    name = str(data.get("dataset", "")).lower()
    seed = int((config or {}).get("seed", 0))
    mask = int(data.get("mask_size", 0) or 0)
    if name == "digits":
        pre = (
            "scikit-learn's load_digits().images (8x8, integer values 0..16) divided by 16.0, float32, shape "
            "(N, 1, 8, 8); no mean/std normalisation"
        )
        split = (
            f"a fixed permutation torch.randperm(1797, generator=torch.Generator().manual_seed("
            f"{DIGITS_SPLIT_SEED})): the first 80 % (1437 images) are the training set, the last 20 % "
            "(360 images) the test set"
        )
    elif name in _RAW:
        pre = (
            f"uint8 pixels of torchvision's raw {_RAW[name]} files divided by 255.0, float32, shape "
            "(N, 1, 28, 28); no mean/std normalisation"
        )
        split = "the official 10,000-image test set (t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)"
    else:
        return {
            "preprocessing": "pixel values scaled to [0, 1]; no mean/std normalisation",
            "test_split": "unknown",
            "occlusion": "none",
        }
    val = data.get("validation")
    if name != "digits" and val != 0:
        split += (
            f"; the validation split is drawn from the training set with torch.randperm(n_train, "
            f"generator=torch.Generator().manual_seed({VAL_SEED})) and never trained on"
        )
    occ = (
        "none"
        if mask <= 0
        else (
            f"one {mask}x{mask} square of zeros per image at a uniform random position: rows then columns drawn "
            f"with torch.randint from torch.Generator().manual_seed({seed} * 7919 + {TEST_MASK_STREAM}) for the test "
            "set, so every image keeps its patch"
        )
    )
    divisor = float(data.get("pixel_divisor", 255.0) or 255.0)
    if divisor != 255.0:
        pre += (
            f"; the network itself then multiplies its inputs by 255/{divisor:g} = {255.0 / divisor:.6g} "
            f"(data.pixel_divisor {divisor:g}: it was trained on pixels divided by {divisor:g}), so feed it the "
            "[0, 1] inputs above"
        )
    return {"preprocessing": pre, "test_split": split, "occlusion": occ}


_SCRIPT = '''#!/usr/bin/env python3
"""Recompute this student's test accuracy from its files, with plain PyTorch (no gped_search).

    python reproduce_accuracy.py [--data-root PATH]      # PATH holds {raw_folder}/raw/ (torchvision layout)

Test set: {test_split}.
Inputs: {preprocessing}.
Occlusion: {occlusion}.
"""

import argparse
import gzip
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

DATASET = {dataset!r}
SEED = {seed}
MASK = {mask}
HEAD = {head}            # index of the predictive head (logits): accuracy is its argmax
HERE = Path(__file__).resolve().parent


def test_set(root):
    if DATASET == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(d.target, dtype=torch.long)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed({digits_seed}))
        idx = perm[int(0.8 * len(y)):]
        x, y = x[idx].contiguous(), y[idx].contiguous()
    else:
        raw = Path(root) / {raw_folder!r} / "raw"

        def read(name, offset):
            p = raw / name
            data = p.read_bytes() if p.exists() else gzip.open(str(p) + ".gz").read()
            return np.frombuffer(data, dtype=np.uint8, offset=offset).copy()

        x = torch.from_numpy(read("t10k-images-idx3-ubyte", 16)).float().div(255.0).reshape(-1, 1, 28, 28)
        y = torch.from_numpy(read("t10k-labels-idx1-ubyte", 8)).long()
    if MASK > 0:
        g = torch.Generator().manual_seed(SEED * 7919 + {mask_stream})
        n, _, h, w = x.shape
        size = min(MASK, h, w)
        rows = torch.randint(0, h - size + 1, (n,), generator=g)
        cols = torch.randint(0, w - size + 1, (n,), generator=g)
        x = x.clone()
        for i in range(n):
            x[i, :, rows[i]:rows[i] + size, cols[i]:cols[i] + size] = 0.0
    return x, y


def predict(x):
    if (HERE / "student.pt2").is_file():
        model = torch.export.load(str(HERE / "student.pt2")).module()
        with torch.no_grad():
            out = model(x)
        return (out[HEAD] if isinstance(out, (tuple, list)) else out).numpy()
    import onnxruntime as ort

    sess = ort.InferenceSession(str(HERE / "student.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {{sess.get_inputs()[0].name: x.numpy()}})[HEAD]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("GPED_DATA_ROOT", "../shared/data"))
    args = ap.parse_args()
    x, y = test_set(args.data_root)
    logits = np.concatenate([predict(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    acc = float((logits.argmax(axis=1) == y.numpy()).mean())
    card = json.loads((HERE / "model_card.json").read_text())
    want = (card.get("metrics") or {{}}).get("test_student_acc")
    print(f"test accuracy {{acc:.6f}} on {{len(y)}} images" + ("" if want is None else f" (model card: {{want:.6f}})"))
    if want is not None and abs(acc - want) > 0.5 / len(y):
        print("MISMATCH: the files do not reproduce the card's accuracy", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def reproduce_script(config: dict | None, head: int) -> str | None:
    """The standalone accuracy script for a student trained with ``config``; None for unknown data."""
    data = (config or {}).get("data") or {}
    name = str(data.get("dataset", "")).lower()
    if name != "digits" and name not in _RAW:
        return None
    r = input_recipe(config)
    return _SCRIPT.format(
        dataset=name,
        seed=int((config or {}).get("seed", 0)),
        mask=int(data.get("mask_size", 0) or 0),
        head=int(head),
        digits_seed=DIGITS_SPLIT_SEED,
        mask_stream=TEST_MASK_STREAM,
        raw_folder=_RAW.get(name, ""),
        **r,
    )
