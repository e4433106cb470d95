"""Downstream uncertainty: OOD detection and uncertainty ranking for teacher, students and a baseline.

The comparison a user needs: the SGLD teacher (Monte Carlo over its stored samples), distilled
students (one forward pass), and a plain deterministic network of the teacher's size trained on
labels (what one has without Bayesian inference). OOD sets: another dataset (``data.ood``, e.g.
Fashion-MNIST for MNIST) and heavily occluded test images (``occlusion:<size>``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch.func import functional_call
from torch.nn import functional as F

from gped_search.data import ood_set
from gped_search.engine import Prepared, teacher_arch_for
from gped_search.metrics.quality import predictive_metrics, student_outputs
from gped_search.metrics.uncertainty import (
    accuracy_rejection,
    ood_metrics,
    ranking_metrics,
    rejection_auc,
    roc_curves,
    uncertainty_scores,
)
from gped_search.models import Arch, Net, build
from gped_search.posterior.expectations import PosteriorAccumulator
from gped_search.posterior.result import TeacherResult
from gped_search.seeds import derive_seed

__all__ = ["teacher_means_on", "train_baseline", "ood_inputs", "downstream_table"]


@torch.no_grad()
def teacher_means_on(teacher: TeacherResult, x: torch.Tensor, p: Prepared, chunk: int = 8192) -> dict:
    """Posterior means of the study's expectations on new inputs, over the artifact's sample bank."""
    model = build(teacher.arch).to(x.device).eval()
    acc = PosteriorAccumulator(x.shape[0], p.bundle.n_classes, p.exps, x.device)
    size = next(iter(teacher.bank.values())).shape[0]
    for k in range(size):
        params = {n: v[k].to(x.device) for n, v in teacher.bank.items()}
        logits = torch.cat(
            [functional_call(model, params, (x[i : i + chunk],))[0] for i in range(0, x.shape[0], chunk)]
        )
        acc.update(logits[None])
    return acc.means()


def train_baseline(
    p: Prepared,
    *,
    steps: int = 5000,
    lr: float = 1e-3,
    batch: int = 100,
    seed: int = 0,
    weight_decay: float = 0.0,
) -> Net:
    """A deterministic network with the teacher's architecture, trained on labels with Adam (SGD baseline)."""
    torch.manual_seed(seed)
    arch: Arch = teacher_arch_for(p)
    model = build(arch).to(p.device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    x, y = p.bundle.train.x, p.bundle.train.y
    gen = torch.Generator(device=p.device).manual_seed(derive_seed(seed, "baseline-batches"))
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), device=p.device, generator=gen)
        loss = F.cross_entropy(model(x[idx])[0], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def ood_inputs(p: Prepared, ood: str) -> tuple[str, torch.Tensor]:
    """``dataset name`` (e.g. fashion_mnist) or ``occlusion:<size>`` -> (label, inputs on the device)."""
    if p.bundle.ood is not None and p.bundle.ood_name == ood:
        return ood, p.bundle.ood.x
    return ood_set(p.cfg.data, ood, p.cfg.seed, p.device)


def downstream_table(
    p: Prepared,
    teacher: TeacherResult,
    students: Mapping[str, torch.nn.Module],
    baseline: torch.nn.Module | None,
    oods: list[str],
    k_frac: float = 0.1,
) -> tuple[pd.DataFrame, dict]:
    """One row per (model, OOD set): accuracy/NLL, AUROC/AUPR per score, ranking vs teacher, rejection AUC.

    Returns the table and the curves for plots: ``curves["roc"][ood][model] = (fpr, tpr)`` with the
    predictive-entropy score, ``curves["rejection"][model] = (fractions, accuracy)``.
    """
    b = p.bundle
    y = b.test.y
    models: dict[str, dict] = {"teacher (SGLD)": {"test": teacher.test}}
    for name, m in students.items():
        models[name] = {"model": m, "test": student_outputs(m, b.test.x)}
    if baseline is not None:
        models["deterministic baseline"] = {
            "model": baseline,
            "test": student_outputs(baseline, b.test.x),
        }
    t_scores = uncertainty_scores(teacher.test)
    bank_test = None  # the teacher's in-distribution side from the bank, for OOD sets only the bank can reach
    rows, curves = [], {"roc": {}, "rejection": {}}
    for name, d in models.items():
        sc = uncertainty_scores(d["test"])
        base = {"model": name, **predictive_metrics(d["test"]["predictive"], y, "")}
        base = {k.lstrip("_"): v for k, v in base.items()}
        base["rejection_auc"] = rejection_auc(d["test"]["predictive"], y, sc["predictive_entropy"])
        curves["rejection"][name] = accuracy_rejection(d["test"]["predictive"], y, sc["predictive_entropy"])
        if name != "teacher (SGLD)":
            r = ranking_metrics(t_scores["predictive_entropy"], sc["predictive_entropy"], k_frac)
            base.update({f"rank_{k}": v for k, v in r.items()})
            if "mutual_information" in sc:
                base["rank_spearman_mi"] = ranking_metrics(
                    t_scores["mutual_information"], sc["mutual_information"], k_frac
                )["spearman"]
        for ood in oods:
            label, x_out = ood_inputs(p, ood)
            sc_in, estimator = sc, "one forward pass" if "model" in d else "thinned iterates"
            if "model" in d:
                out = student_outputs(d["model"], x_out)
            elif label == b.ood_name and teacher.ood is not None:
                out = teacher.ood  # means over the thinned iterates, as teacher.test: one estimator
            else:
                # Only the bank reaches this OOD set: score the in-distribution side with the bank too,
                # so both sides of the AUROC come from one estimator.
                out = teacher_means_on(teacher, x_out, p)
                if bank_test is None:
                    bank_test = uncertainty_scores(teacher_means_on(teacher, b.test.x, p))
                sc_in = bank_test
                estimator = f"bank ({next(iter(teacher.bank.values())).shape[0]} samples)"
            so = uncertainty_scores(out)
            m = ood_metrics(sc_in, so)
            rows.append({**base, "ood": label, "estimator": estimator, **m})
            curves["roc"].setdefault(label, {})[name] = (
                *roc_curves(sc_in, so, "predictive_entropy"),
                m.get("auroc_predictive_entropy"),
            )
        if not oods:
            rows.append(base)
    df = pd.DataFrame(rows)
    num = df.select_dtypes(include=[np.number]).columns
    df[num] = df[num].astype(float)
    return df, curves
