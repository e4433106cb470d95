"""The model card of an exported student: what each output head means, how to load each file, and
the card as Markdown (``exporting.export_student`` writes it next to the files)."""

from __future__ import annotations

from gped_search.models.nets import Arch

__all__ = ["HEAD_MEANINGS", "CUSTOM_MEANING", "MUTUAL_INFORMATION", "load_snippets", "heads_of", "card_markdown"]

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
CUSTOM_MEANING = "user-defined posterior expectation (softplus output, >= 0)"
MUTUAL_INFORMATION = (
    "mutual information = H(softmax(predictive)) - expected_entropy (nats, clamp at 0) = epistemic uncertainty"
)


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


def heads_of(arch: Arch) -> list[dict]:
    out = []
    for i, (name, dim) in enumerate(arch.heads):
        out.append(
            {
                "index": i,
                "name": name,
                "dim": arch.n_classes if name == "predictive" else int(dim),
                "output": (
                    (
                        f"logits at temperature {arch.temperature:g} (apply softmax)"
                        if arch.temperature != 1.0
                        else "logits (apply softmax)"
                    )
                    if name == "predictive"
                    else "linear (any sign)"
                    if name in arch.linear_heads
                    else "softplus (positive)"
                ),
                "meaning": HEAD_MEANINGS.get(name, CUSTOM_MEANING),
            }
        )
    return out


def card_markdown(card: dict) -> str:
    a, inp = card["architecture"], card["input"]
    title = card["study"]["name"] or "student"
    if card["study"]["trial_number"] is not None:
        title += f" / trial {card['study']['trial_number']}"
    lines = [
        f"# Model card: {title}",
        "",
        f"Student network distilled from a Bayesian (SGLD) teacher. Exported {card['created_utc']} "
        f"with torch {card['torch_version']}.",
        "",
        "## Architecture",
        "",
        f"- {a['description']} ({a['n_params']} parameters)",
        f"- family `{a['arch']['family']}`, hidden {a['arch']['hidden']}"
        + (
            f", conv channels {a['arch']['channels']} kernel {a['arch']['kernel']} padding {a['arch']['padding']}"
            if a["arch"]["family"] == "cnn"
            else ""
        ),
        "",
        "## Outputs (one tensor per head, in this order)",
        "",
        "| # | head | dim | output | meaning |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {h['index']} | `{h['name']}` | {h['dim']} | {h['output']} | {h['meaning']} |" for h in card["heads"]]
    lines += [""] + [f"- Derived: {d}" for d in card["derived"]] + [""]
    lines += [
        "## Input",
        "",
        f"- shape {inp['shape']} (batch first), dtype {inp['dtype']}",
        f"- preprocessing: {inp['preprocessing']}",
        f"- batch dimension: {inp['batch']}",
    ]
    lines += [f"- {k.replace('_', ' ')}: {inp[k]}" for k in ("test_split", "occlusion", "reproduce") if k in inp]
    lines += [""]
    metrics = card["metrics"] or {}
    split = metrics.get("selection_split")
    test = {k: v for k, v in metrics.items() if k.startswith("test_")}
    sel = {k: v for k, v in metrics.items() if not k.startswith("test_")}
    heading = {
        "validation": "Metrics on the validation split (what the search selected on)",
        "test": "Metrics on the test set (no validation split: this student was also selected on them)",
    }.get(split, "Metrics")
    sections = [(heading, sel)]
    if test and split == "validation":
        sections.append(("Test-set metrics (reported apart, never used for selection)", test))
    sections.append(("Cost", card["cost"] or {}))
    for heading, vals in sections:
        lines += [f"## {heading}", ""]
        vals = {k: v for k, v in vals.items() if not (isinstance(v, float) and v != v)}  # no nan rows
        lines += [f"- {k}: {v}" for k, v in vals.items()] if vals else ["- (none given)"]
        lines.append("")
    q = card.get("quantization")
    if q:
        dev = ", ".join(f"{k} {v:.3g}" for k, v in q["max_abs_deviation_from_fp32"].items())
        lines += [
            "## Quantization",
            "",
            f"- precision {q['precision']}: ONNX Runtime, mode `{q['mode']}`, weights {q['weight_type']}"
            + (" per channel" if q["per_channel"] else "")
            + f", activations {q['activation_type']}",
            f"- reduce_range {q['reduce_range']} (CPU VNNI: {q['vnni']})",
            f"- calibration: {q['calibration_set']}"
            + (f", {q['calibration_size']} inputs" if q["calibration_size"] else ""),
            f"- max abs deviation from the fp32 student on {q['deviation_measured_on']}: {dev} (limit {q['atol']:g})",
        ]
        if "test_student_acc" in q:
            lines.append(f"- int8 test accuracy: {q['test_student_acc']:.6f} (what reproduce_accuracy.py checks)")
        lines.append("")
    lines += [
        "## Files",
        "",
        "| file | bytes | sha256 | max abs diff on reload |",
        "|---|---|---|---|",
    ]
    ver = card["verification"]["max_abs_diff"]
    for fmt, f in card["files"].items():
        d = ver.get(fmt)
        lines.append(
            f"| `{f['name']}` | {f['bytes']} | `{f['sha256']}` | {'not verified' if d is None else f'{d:.3g}'} |"
        )
    lines += [
        "",
        f"Verified on a batch of {card['verification']['batch']} "
        f"({card['verification']['input']}) with atol {card['verification']['atol']:g}.",
        "",
        "## Loading",
        "",
    ]
    for f in card["files"].values():
        lines += [f"`{f['name']}`:", "", "```python", f["load"], "```", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- export
