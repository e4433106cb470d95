"""The model card as Markdown: deployment figures, intended use and limitations first; outputs, input,
architecture, files and loading next; every recorded metric in an appendix at the end."""

from __future__ import annotations

__all__ = ["card_markdown"]


def _num(v, fmt: str = ".4f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _size(n) -> str:
    if not isinstance(n, (int, float)):
        return str(n)
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{int(n)} B"


def _deployment(d: dict) -> list[str]:
    rows = []
    if "test_accuracy" in d:
        rows.append(("test accuracy", f"{100 * d['test_accuracy']:.2f} %"))
    for key, label in (
        ("test_nll", "test NLL [nats]"),
        ("test_ece", "test ECE"),
        ("test_kl_to_teacher", "test KL to the teacher [nats]"),
    ):
        if key in d:
            rows.append((label, _num(d[key])))
    if "params" in d:
        rows.append(("parameters", f"{int(d['params']):,}"))
    if "bytes_fp32" in d:
        rows.append(("size (fp32 weights)", _size(d["bytes_fp32"])))
    for name, n in d.get("file_bytes", {}).items():
        rows.append((f"size of `{name}`", _size(n)))
    if "latency_ms" in d:
        spread = d.get("latency_p10_p90_ms")
        extra = f" (p10–p90 {spread[0]:.4g}–{spread[1]:.4g})" if spread else ""
        rows.append((f"latency at batch {d.get('latency_batch', 1)}", f"{d['latency_ms']:.4g} ms{extra}"))
        rows.append(("latency measured on", d["latency_measured_on"]))
    if not rows:
        return ["(no figures recorded)", ""]
    return ["| figure | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]


def _metric_sections(card: dict) -> list[tuple[str, dict]]:
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
    return sections


def _quantization(q: dict) -> list[str]:
    dev = ", ".join(f"{k} {v:.3g}" for k, v in q["max_abs_deviation_from_fp32"].items())
    lines = [
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
    return [*lines, ""]


def card_markdown(card: dict) -> str:
    a, inp = card["architecture"], card["input"]
    title = card["study"]["name"] or "student"
    if card["study"]["trial_number"] is not None:
        title += f" / trial {card['study']['trial_number']}"
    lines = [
        f"# Model card: {title}",
        "",
        f"{a['description']}: a student network distilled from a Bayesian (SGLD) teacher. Exported "
        f"{card['created_utc']} with torch {card['torch_version']}.",
        "",
        "## Deployment figures (test set)",
        "",
        *_deployment(card.get("deployment") or {}),
        "## Intended use",
        "",
        *[f"- {u}." for u in card.get("intended_use", [])],
        "",
        "## Limitations",
        "",
        *[f"- {u}." for u in card.get("limitations", [])],
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
    cnn = a["arch"]["family"] == "cnn"
    lines += [
        "",
        "## Architecture",
        "",
        f"- {a['description']} ({a['n_params']} parameters)",
        f"- family `{a['arch']['family']}`, hidden {a['arch']['hidden']}"
        + (
            f", conv channels {a['arch']['channels']} kernel {a['arch']['kernel']} padding {a['arch']['padding']}"
            if cnn
            else ""
        ),
        "",
    ]
    if card.get("quantization"):
        lines += _quantization(card["quantization"])
    lines += ["## Files", "", "| file | bytes | sha256 | max abs diff on reload |", "|---|---|---|---|"]
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
    lines += ["## Appendix: every recorded figure", ""]
    for heading, vals in _metric_sections(card):
        lines += [f"### {heading}", ""]
        vals = {k: v for k, v in vals.items() if not (isinstance(v, float) and v != v)}  # no nan rows
        lines += [f"- {k}: {v}" for k, v in vals.items()] if vals else ["- (none given)"]
        lines.append("")
    return "\n".join(lines)
