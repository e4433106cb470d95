"""A student's record: quality against the teacher on the selection and test splits, adversarial
robustness when the study asks for it, cost figures and measured latency (:func:`student_record`),
and a trial's record around it (:func:`trial_record`)."""

from __future__ import annotations

import torch

from gped_search.config import PruneConfig
from gped_search.config.metric_names import ROBUST_METRICS
from gped_search.distill.loop import TeacherResult
from gped_search.metrics.cost import cost_figures, measure_latency
from gped_search.metrics.quality import evaluate, student_outputs
from gped_search.metrics.uncertainty import downstream_record
from gped_search.models import Net
from gped_search.quant.deploy import needs_onnx

from .context import Prepared

__all__ = ["ROBUST_METRICS", "quality", "robustness", "selection_scores", "student_record", "trial_record"]


def quality(
    model: Net,
    x: torch.Tensor,
    y: torch.Tensor,
    means: dict,
    teacher: TeacherResult,
    s_ood: dict | None,
    student_only_ood: bool = False,
) -> dict:
    """Quality and downstream figures of ``model`` on ``(x, y)`` against the teacher's ``means``."""
    s = student_outputs(model, x)
    rec = evaluate(model, x, y, means, outputs=s)
    t_ood = teacher.ood if s_ood is not None and not student_only_ood else None
    rec.update(downstream_record(means, s, y, t_ood, s_ood, student_only_ood=student_only_ood))
    return rec


def robustness(model: Net, p: Prepared) -> dict:
    """PGD accuracy (``search.robust_eps``, ``robust_steps``) on the first ``robust_n`` images of the
    selection split (``robust_acc``, ``robust_error``) and the test split (``test_...``), when an
    objective or constraint of the study names one of them; else nothing."""
    s = p.cfg.search
    if not any(m in s.objectives or m in s.constraints for m in ROBUST_METRICS):
        return {}
    from gped_search.metrics.adversarial import attack, student_probs_fn

    probs = student_probs_fn(model.eval())
    out = {}
    splits = [("test_", p.bundle.test)] + ([("", p.bundle.val)] if p.bundle.val is not None else [])
    for prefix, split in splits:
        x, y = split.x[: s.robust_n], split.y[: s.robust_n]
        xa = attack("pgd", probs, x, y, s.robust_eps, steps=s.robust_steps, seed=p.cfg.seed)
        with torch.no_grad():
            acc = float((probs(xa).argmax(1) == y).float().mean())
        out[f"{prefix}robust_acc"], out[f"{prefix}robust_error"] = acc, 1.0 - acc
    if p.bundle.val is None:
        out["robust_acc"], out["robust_error"] = out["test_robust_acc"], out["test_robust_error"]
    return out


def selection_scores(model, teacher: TeacherResult, p: Prepared) -> dict:
    """Quality metrics on the selection split and (``test_``) the test set; ``model`` may be an ONNX session."""
    b = p.bundle
    s_ood = student_outputs(model, b.ood.x) if b.ood is not None and teacher.ood is not None else None
    test = quality(model, b.test.x, b.test.y, teacher.test, teacher, s_ood)
    if b.val is not None and teacher.val is not None:
        # ood_auroc (selection) on OOD images test_ood_auroc never sees: the OOD dataset's training images
        s_val_ood = student_outputs(model, b.val_ood.x) if b.val_ood is not None and s_ood is not None else None
        rec = quality(model, b.val.x, b.val.y, teacher.val, teacher, s_val_ood, student_only_ood=True)
        rec["selection_split"] = "validation"
    else:
        rec = dict(test)
        rec["selection_split"] = "test"
    rec.update({f"test_{k}": v for k, v in test.items()})
    return rec


def student_record(
    model: Net,
    teacher: TeacherResult,
    p: Prepared,
    latency_batch: int = 1,
    latency_repeats: int = 30,
    precision: str = "fp32",
) -> dict:
    """Quality against the teacher, plus cost figures and measured latency.

    When the study may quantize or times in ONNX Runtime, the student is also written as ONNX
    (:func:`gped_search.quant.deploy.deployed_record`): an int8 trial's quality, ``bytes`` and
    latency are then the quantized model's in an ONNX Runtime session, its fp32 figures ``fp32_*``.

    With a validation split, the plain metric names (``kl``, ``student_acc``, ``ood_auroc``, ...)
    are measured on it, and are what objectives, constraints and fronts use; the same metrics on
    the test set are recorded as ``test_<metric>`` for reporting only. Without one
    (``data.validation: 0``), both are the test set's and ``selection_split`` says ``test``.
    """
    b = p.bundle
    rec = selection_scores(model, teacher, p)
    rec.update(robustness(model, p))
    cost = cost_figures(model, b.test.x[:1])
    lat = measure_latency(
        model,
        b.in_shape,
        batch=latency_batch,
        device=str(p.device),
        threads=1 if p.device.type == "cpu" else None,
        repeats=latency_repeats,
        warmup=5,
    )
    rec.update({k: v for k, v in cost.items() if isinstance(v, (int, float))})
    rec.update(
        {
            "latency_ms": lat["median_ms"],
            "latency_p10_ms": lat["p10_ms"],
            "latency_p90_ms": lat["p90_ms"],
            "latency_batch": lat["batch"],
            "latency_device": str(lat["device"]),
            "latency_machine": lat["machine"],
        }
    )
    rec["bytes"] = rec["bytes_fp32"]
    if needs_onnx(p.cfg):
        from gped_search.quant.deploy import deployed_record

        score = lambda m: selection_scores(m, teacher, p)  # noqa: E731
        rec.update(deployed_record(model, p.cfg, b.transfer, precision, rec, score, latency_batch, latency_repeats))
    arch = model.arch
    rec["arch"] = arch.describe()
    for i, w in enumerate(arch.channels):
        rec[f"channels_{i}"] = w
    for i, w in enumerate(arch.hidden):
        rec[f"hidden_{i}"] = w
    return rec


def trial_record(
    model: Net,
    teacher: TeacherResult,
    p: Prepared,
    prune: PruneConfig,
    pruning: dict | None,
    steps: int,
    latency_batch: int,
    precision: str = "fp32",
) -> dict:
    """A trial's record: :func:`student_record` plus its training steps and pruning summary."""
    rec = student_record(model, teacher, p, latency_batch, precision=precision)
    rec.update(
        {
            "student_steps": steps,
            "lambda_g": prune.lambda_g,
            "prune_method": prune.method.value,
            "units_removed": sum(pruning["units_removed"]) if pruning else 0,
            "params_kept_fraction": pruning["params_kept_fraction"] if pruning else 1.0,
        }
    )
    return rec
