"""Evaluate one exported student on its study's test set: accuracy, calibration, OOD detection.

Only the test set (and the OOD set) is loaded, exactly as the study made it (same occlusion masks);
with the study's teacher artifact the student's KL and uncertainty ranking against it are added.
"""

from __future__ import annotations

import dataclasses

import torch

from gped_search.config import ConfigError, study_from_dict
from gped_search.data import DataError, ood_set, test_split
from gped_search.data.transforms import check_ood_spec
from gped_search.metrics.quality import evaluate, predictive_metrics, student_outputs
from gped_search.metrics.uncertainty import (
    downstream_record,
    ood_metrics,
    rejection_auc,
    uncertainty_scores,
)
from gped_search.posterior.artifact import load_teacher

__all__ = ["evaluate_student"]


def evaluate_student(
    model: torch.nn.Module,
    meta: dict,
    *,
    ood: str | None = None,
    data_root: str | None = None,
    teacher: str | None = None,
    where: str = "",
) -> dict:
    """Metrics of ``model`` (a loaded checkpoint and its ``meta``) on its study's test set.

    ``ood``: a dataset name or ``occlusion:<size>`` (default: the study's ``data.ood``); ``data_root``
    overrides the study's; ``teacher`` is a teacher artifact path. ``where`` names the checkpoint in
    errors. Raises :class:`ConfigError` / :class:`DataError` with one-line messages.
    """
    cfg = study_from_dict(meta.get("config") or {})
    data = dataclasses.replace(cfg.data, root=data_root) if data_root else cfg.data
    if ood:
        try:  # before any data is loaded: a wrong shape or patch size is one line, not a traceback
            check_ood_spec(data.dataset, ood)
        except ValueError as e:
            raise ConfigError(f"--ood {ood}: {e}") from None
    try:
        test = test_split(data, cfg.seed)
        spec = ood or (data.ood.value if data.ood is not None else None)
        ood_name, out_x = ood_set(data, spec, cfg.seed) if spec else (None, None)
    except DataError as e:  # this command's flag is --data-root, not the study file's data.root
        raise DataError(
            str(e).replace(
                "with data.root in the study file, --set data.root=PATH or ",
                "with --data-root PATH or ",
            )
        ) from None
    except ValueError as e:
        raise ConfigError(f"--ood {ood!r}: {e}") from None
    model.eval()
    s_test = student_outputs(model, test.x)
    rec = {"checkpoint": where, "dataset": data.dataset.value, "n_test": len(test)}
    rec.update(predictive_metrics(s_test["predictive"], test.y, "student"))
    sc = uncertainty_scores(s_test)
    rec["rejection_auc"] = rejection_auc(s_test["predictive"], test.y, sc["predictive_entropy"])
    s_ood = student_outputs(model, out_x) if out_x is not None else None
    if s_ood is not None:
        rec["ood"] = ood_name
        rec.update({f"ood_{k}": v for k, v in ood_metrics(sc, uncertainty_scores(s_ood)).items()})
    if teacher:
        t = load_teacher(teacher)
        if t.test["predictive"].shape[0] != len(test):
            raise ConfigError(f"--teacher {teacher}: made on another test set")
        rec.update({k: v for k, v in evaluate(model, test.x, test.y, t.test).items() if not k.startswith("student_")})
        teacher_ood = (
            t.ood
            if (
                s_ood is not None and t.ood is not None and t.ood["predictive"].shape[0] == s_ood["predictive"].shape[0]
            )
            else None
        )
        rec.update(downstream_record(t.test, s_test, test.y, teacher_ood, s_ood if teacher_ood else None))
    return {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in rec.items()}
