"""Export a study's trial: pick it, describe it, write (or copy from :mod:`.export_cache`) its files.

``export_trial`` is what ``gped-search export`` does; ``prepare_knee_export`` is what ``gped-search run``
does when its study ends, so that exporting the recommended student is a copy of verified files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from gped_search.config import ConfigError, StudyConfig
from gped_search.report.tables import knee_point, pareto_front

from .export_cache import ExportCache
from .jobs import pick_trial, study_file
from .results import study_objectives, trials_frame

__all__ = ["export_trial", "prepare_knee_export"]

_PRIVATE = ("state", "checkpoint", "worker", "artifact_id", "artifact_error", "teacher_artifact")
"""Trial attributes that describe this machine, not the student: never written into exported files."""

DEFAULT_FORMATS = ("checkpoint", "pt2")


def export_trial(
    cfg: StudyConfig,
    study: optuna.Study,
    out: str | Path,
    *,
    trial: str | None = None,
    knee: bool = False,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    best_under: float | None = None,
    require: tuple = (),
    fresh: bool = False,
) -> dict:
    """Export one trial's student (``exporting.export_student``) and record it on the study.

    ``best_under`` (bytes, fp32) and ``require`` (``(metric, op, value)``, :mod:`.selection`) first keep the
    complete trials whose validation figures fit; then ``--knee`` / ``best:<objective>`` pick among them
    (default: the best on the study's first objective). The result's ``warning`` says when the knee's
    validation accuracy is far below another front member's; ``from_cache`` when the files were copied
    from an earlier export of the same student (:mod:`.export_cache`; ``fresh``: never)."""
    from gped_search.report.tables import knee_accuracy_gap

    from .selection import apply_filters

    df = trials_frame(study)
    objectives = study_objectives(study)
    if best_under is not None or require:
        if trial is not None and not trial.startswith("best:"):
            raise ConfigError(
                f"--trial {trial} names one trial: use --best-under / --require with --knee or --trial best:<objective>"
            )
        df = apply_filters(df, best_under, require)
        trial = trial if trial is not None or knee else f"best:{next(iter(objectives))}"
    number = pick_trial(df, objectives, trial, knee)
    warning = None
    if knee:
        front = pareto_front(df, objectives)
        gap = knee_accuracy_gap(front, knee_point(front, objectives))
        warning = gap["warning"] if gap else None
    ckpt, meta, formats = _trial_export(cfg, df, objectives, number, formats)
    cache = ExportCache(cfg.out_dir, number, ckpt, meta, formats)
    res = None if fresh else cache.copy_to(out)
    if res is None:
        res = _export(cfg, ckpt, out, formats, meta)
        cache.keep(res, _exporter_names())
    _publish_export(cfg, number, res["files"])
    exported = dict(study.user_attrs.get("exported_trials", {}))
    exported[str(number)] = str(Path(out).resolve())  # found from any directory (live_exports)
    study.set_user_attr("exported_trials", exported)  # starred in the report
    return {"trial": number, "warning": warning, **res}


def prepare_knee_export(cfg: StudyConfig, study: optuna.Study) -> int | None:
    """Export the study's recommended (knee) student in the default formats into the study's export cache
    (nothing is starred, no folder of the user's is written), unless a current copy is kept already.
    Returns the trial's number, or None when the study has no front yet, its checkpoint is elsewhere or
    the export failed (logged as a warning: the study and its report are done, the run goes on)."""
    try:
        return _prepare_knee(cfg, study)
    except Exception as e:
        import logging

        from gped_search.errors import one_line

        logging.getLogger(__name__).warning(
            "the recommended student was not exported ahead (%s: %s)", type(e).__name__, one_line(e)
        )
        return None


def _prepare_knee(cfg: StudyConfig, study: optuna.Study) -> int | None:
    import shutil
    import tempfile

    df = trials_frame(study)
    objectives = study_objectives(study)
    try:
        number = pick_trial(df, objectives, None, True)
        ckpt, meta, formats = _trial_export(cfg, df, objectives, number, DEFAULT_FORMATS)
    except ConfigError:
        return None
    cache = ExportCache(cfg.out_dir, number, ckpt, meta, formats)
    if cache.current():
        return number
    tmp = Path(tempfile.mkdtemp(prefix=".knee-", dir=cfg.out_dir))
    try:
        cache.keep(_export(cfg, ckpt, tmp, formats, meta), _exporter_names())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return number


def _trial_export(cfg: StudyConfig, df: pd.DataFrame, objectives, number: int, formats) -> tuple[Path, dict, tuple]:
    """Trial ``number``'s checkpoint, the card's metadata and the formats to write (an int8 trial adds
    ``onnx-int8``); a :class:`ConfigError` when its checkpoint is not in the study folder."""
    row = df[df["number"] == number].iloc[0]
    ckpt = study_file(cfg, row.get("checkpoint"))
    if ckpt is None or not ckpt.is_file():
        raise ConfigError(
            f"trial {number}: its checkpoint {row.get('checkpoint')!r} is not in {cfg.out_dir} "
            "(give the study's report folder with --set report_dir=...)"
        )
    metrics = {  # a frame row holds numpy scalars (np.int64 is no Python int); no nan rows
        k: v.item() if isinstance(v, np.generic) else v
        for k, v in row.items()
        if k not in _PRIVATE
        and isinstance(v, (int, float, str, np.integer, np.floating, np.bool_))
        and not (isinstance(v, (float, np.floating)) and v != v)
    }
    meta = {
        "study": cfg.name,
        "trial": number,
        "metrics": metrics,
        "objectives": {k: float(row[k]) for k in objectives},
    }
    formats = tuple(formats)
    if row.get("precision") == "int8" and "onnx-int8" not in formats:
        formats = (*formats, "onnx-int8")  # an int8 trial is deployed as int8
    return ckpt, meta, formats


def _export(cfg: StudyConfig, ckpt: Path, out: str | Path, formats, meta: dict) -> dict:
    from gped_search.exporting import FORMATS, export_student  # torch: only when the files are written

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"--format: unknown {bad}; valid: {', '.join(FORMATS)}")
    kw = _int8_inputs(cfg) if "onnx-int8" in formats else {}
    return export_student(str(ckpt), out, formats, meta=meta, **kw)


def _exporter_names() -> set[str]:
    from gped_search.exporting import EXPORTER_NAMES

    return set(EXPORTER_NAMES)


def _publish_export(cfg: StudyConfig, number: int, files: dict) -> None:
    """With ``search.artifacts``: the exported files also go to the store, under ``exports/trial-NNNNN/``."""
    from gped_search.store import put_file, study_store

    store = study_store(cfg)
    for path in [] if store is None else files.values():
        put_file(store, f"exports/trial-{number:05d}/{Path(path).name}", path)


def _int8_inputs(cfg: StudyConfig) -> dict:
    """An int8 export's calibration inputs (the transfer set's, as in the trial) and test set (x, y)."""
    from gped_search.data import make_bundle
    from gped_search.quant import calibration_inputs

    b = make_bundle(cfg.data, cfg.seed, "cpu")
    calibration = calibration_inputs(b.transfer, cfg.student.calibration_size, cfg.distill.transfer_size)
    return {"calibration": calibration, "test": (b.test.x, b.test.y)}
