"""The model card of an exported student as plain data: the deployment figures first (test accuracy,
NLL, ECE, KL to the teacher, size, latency and the machine it was measured on), intended use and
limitations, what each output head means, how to load each file; every recorded metric stays in the
card's ``metrics`` (the Markdown puts them in an appendix, :mod:`gped_search.modelcard_md`)."""

from __future__ import annotations

import datetime as _dt

import torch
from torch import nn

from gped_search.checkpoints import plain_data
from gped_search.errors import ExportError
from gped_search.modelcard_md import card_markdown
from gped_search.models.nets import Arch, arch_of

__all__ = [
    "HEAD_MEANINGS",
    "CUSTOM_MEANING",
    "MUTUAL_INFORMATION",
    "CARD_FORMAT",
    "CARD_VERSION",
    "load_snippets",
    "heads_of",
    "deployment_figures",
    "build_card",
    "card_markdown",
]

CARD_FORMAT = "gped-search-model-card"
CARD_VERSION = 2  # 2: ``deployment``, ``intended_use`` and ``limitations`` sections
HEAD_MEANINGS = {
    "predictive": (
        "class logits; softmax(logits) = p(y|x) = E_theta[p(y|x,theta)], the class probabilities "
        "averaged over the posterior (the Bayesian predictive distribution)"
    ),
    "expected_entropy": (
        "E_theta[H(p(y|x,theta))] in nats (softplus output, >= 0): the expected entropy of the "
        "per-sample predictions = aleatoric uncertainty"
    ),
}
CUSTOM_MEANING = "user-defined posterior expectation"
MUTUAL_INFORMATION = (
    "mutual information = H(softmax(predictive)) - expected_entropy (nats, clamp at 0) = epistemic uncertainty"
)
_DATASETS = {
    "digits": "8x8 handwritten digits (scikit-learn)",
    "mnist": "MNIST digits",
    "fashion_mnist": "Fashion-MNIST",
}


def load_snippets(arch: Arch) -> dict[str, str]:
    shape = ", ".join(str(v) for v in arch.in_shape)
    outs = ", ".join(arch.head_names) if len(arch.heads) > 1 else f"{arch.head_names[0]},"
    return {
        "checkpoint": (
            "import torch; from gped_search.checkpoints import load_checkpoint\n"
            'model, meta = load_checkpoint("student.pt")  # eval mode, weights_only load\n'
            f"{outs} = model(torch.rand(8, {shape}))"
        ),
        "pt2": (
            "import torch\n"
            'model = torch.export.load("student.pt2").module()  # plain PyTorch, no gped_search\n'
            f"{outs} = model(torch.rand(8, {shape}))"
        ),
        "onnx": (
            "import numpy as np, onnxruntime as ort\n"
            'sess = ort.InferenceSession("student.onnx")\n'
            f'{outs} = sess.run(None, {{"x": np.random.rand(8, {shape}).astype(np.float32)}})'
        ),
        "onnx-int8": (
            "import numpy as np, onnxruntime as ort  # int8 weights; inputs and outputs stay float32\n"
            'sess = ort.InferenceSession("student.int8.onnx")\n'
            f'{outs} = sess.run(None, {{"x": np.random.rand(8, {shape}).astype(np.float32)}})'
        ),
    }


def _head_output(arch: Arch, name: str) -> str:
    if name == "predictive":
        t = arch.temperature
        return f"logits at temperature {t:g} (apply softmax)" if t != 1.0 else "logits (apply softmax)"
    if name in getattr(arch, "unit_heads", ()):
        return "sigmoid (in [0, 1])"
    return "linear (any sign)" if name in arch.linear_heads else "softplus (positive)"


def heads_of(arch: Arch) -> list[dict]:
    return [
        {
            "index": i,
            "name": name,
            "dim": arch.n_classes if name == "predictive" else int(dim),
            "output": _head_output(arch, name),
            "meaning": HEAD_MEANINGS.get(name, f"{CUSTOM_MEANING} ({_head_output(arch, name)})"),
        }
        for i, (name, dim) in enumerate(arch.heads)
    ]


def _pick(metrics: dict, name: str):
    """The test figure ``test_<name>``, or ``<name>`` when the study selected on the test set."""
    if f"test_{name}" in metrics:
        return metrics[f"test_{name}"]
    return metrics.get(name) if metrics.get("selection_split") == "test" else None


def deployment_figures(metrics: dict | None, cost: dict | None, files: dict, quantization: dict | None) -> dict:
    """What a deployer asks first, on the test set: accuracy, NLL, ECE, KL to the teacher, size, latency
    and where latency was measured. A figure the trial did not record is absent."""
    m, c = metrics or {}, cost or {}
    out = {
        "test_accuracy": _pick(m, "student_acc"),
        "test_nll": _pick(m, "student_nll"),
        "test_ece": _pick(m, "student_ece"),
        "test_kl_to_teacher": _pick(m, "kl"),
    }
    if quantization and "test_student_acc" in quantization:
        out["test_accuracy"] = quantization["test_student_acc"]
    out["params"] = c.get("params", m.get("params"))
    out["bytes_fp32"] = c.get("bytes_fp32", m.get("bytes_fp32"))
    out["file_bytes"] = {f["name"]: f["bytes"] for f in files.values()}
    if "latency_ms" in m:
        out["latency_ms"] = m["latency_ms"]
        if "latency_p10_ms" in m and "latency_p90_ms" in m:
            out["latency_p10_p90_ms"] = [m["latency_p10_ms"], m["latency_p90_ms"]]
        out["latency_batch"] = m.get("latency_batch", 1)
        out["latency_measured_on"] = _machine(m)
    return {k: v for k, v in out.items() if v is not None}


def _machine(m: dict) -> str:
    where = m.get("latency_machine")
    device = m.get("latency_device", "cpu")
    how = "ONNX Runtime, one thread" if m.get("latency_backend") == "onnxruntime" else f"PyTorch on {device}"
    if where:
        return f"{where} ({how}, during the search)"
    return f"the machine that ran the study ({how}; its CPU model was not recorded): re-measure on yours"


def _use_and_limits(arch: Arch, config: dict | None, metrics: dict | None) -> tuple[list[str], list[str]]:
    data = (config or {}).get("data") or {}
    name = str(data.get("dataset", "")).lower()
    what = _DATASETS.get(name, name or "the study's dataset")
    mask = int(data.get("mask_size", 0) or 0)
    m = metrics or {}
    use = [
        f"Classifying {what} images of shape {list(arch.in_shape)}, preprocessed exactly as under Input"
        + (f", with a {mask} px occluding square as in training" if mask else ""),
    ]
    if "expected_entropy" in arch.head_names:
        use.append(
            "Flagging uncertain inputs from one forward pass: the expected entropy (aleatoric) and, with the "
            "predictive, the mutual information (epistemic), distilled from a Bayesian (SGLD) teacher"
        )
    limits = [
        "Only as good as its teacher: the student imitates an SGLD posterior estimate"
        + (
            f" of {int(m['teacher_iterations']):,} iterations"
            if isinstance(m.get("teacher_iterations"), (int, float))
            else ""
        )
        + "; its KL to the teacher says how closely, not whether the teacher is right",
        f"Measured on {what} test images only; other data, sensors or preprocessing are untested",
    ]
    if "test_ood_auroc" in m or "ood_auroc" in m:
        limits.append("Out-of-distribution detection was measured against one OOD dataset; others may differ")
    else:
        limits.append("Out-of-distribution detection was not measured for this student")
    if "robust_acc" not in m:
        limits.append("Not evaluated under adversarial attack (gped-search robustness measures it)")
    limits.append("Latency is a batch-1 figure on one machine; it reorders with hardware and load")
    return use, limits


def build_card(
    model: nn.Module,
    x: torch.Tensor,
    x_desc: str,
    written,
    files: dict,
    recipe: dict,
    meta: dict,
    cost,
    extra: dict,
    atol: float,
) -> dict:
    """The model card as plain data (``model_card.json``); ``written`` is the export's
    :class:`gped_search.export_files.Written`."""
    arch, dtype = arch_of(model), next(model.parameters()).dtype
    derived = [MUTUAL_INFORMATION] if {"predictive", "expected_entropy"} <= set(arch.head_names) else []
    batch = (
        "dynamic (any N >= 1)"
        if written.dynamic or written.dynamic is None
        else f"static: the .pt2 program expects N = {x.shape[0]}"
    )
    use, limits = _use_and_limits(arch, meta.get("config"), meta.get("metrics"))
    card = {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "torch_version": torch.__version__,
        "study": {
            "name": meta.get("study_name", meta.get("study")),
            "trial_number": meta.get("trial_number", meta.get("trial")),
        },
        "deployment": deployment_figures(meta.get("metrics"), cost, files, written.int8),
        "intended_use": use,
        "limitations": limits,
        "architecture": {
            "description": arch.describe(),
            "arch": arch.to_dict(),
            "n_params": sum(p.numel() for p in model.parameters()),
        },
        "heads": heads_of(arch),
        "derived": derived,
        "input": {"shape": ["N", *arch.in_shape], "dtype": str(dtype).removeprefix("torch."), **recipe, "batch": batch},
        "metrics": meta.get("metrics"),
        "cost": cost,
        "config": meta.get("config"),
        "pruning": meta.get("pruning"),
        "extra": extra or None,
        "files": files,
        "verification": {
            "atol": atol,
            "batch": int(x.shape[0]),
            "input": x_desc,
            "max_abs_diff": written.diffs,
            "passed": True,
        },
        "dynamic_batch": written.dynamic,
    }
    if written.int8 is not None:
        card["quantization"] = written.int8
    try:
        return plain_data(card, "card")
    except TypeError as e:
        raise ExportError(f"model card: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
