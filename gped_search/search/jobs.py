"""What the commands do with a finished study: pick a trial, write its report, export a student,
score students downstream. The command line parses arguments and calls these.
"""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path

import optuna
import pandas as pd

from gped_search.config import ConfigError, StudyConfig, to_dict
from gped_search.report.tables import knee_point, pareto_front

from .results import live_exports, study_objectives, study_path, study_status, teacher_seconds_saved, trials_frame

__all__ = [
    "study_file",
    "pick_trial",
    "export_command",
    "parameter_importances",
    "write_study_report",
]


def pick_trial(df: pd.DataFrame, objectives: dict[str, str], trial: str | None, knee: bool) -> int:
    """A trial number from ``--trial N``, ``--trial best:<objective>`` or ``--knee`` (front members only)."""
    if trial is not None and not trial.startswith("best:"):
        try:
            number = int(trial)
        except ValueError:
            raise ConfigError(f"--trial {trial!r}: give a number or best:<objective>") from None
        row = df[df["number"] == number]
        if row.empty:
            raise ConfigError(f"--trial {number}: trial {number} does not exist (the study has {len(df)} trials)")
        r = row.iloc[0]
        if r["state"] != "COMPLETE":
            reason = r.get("fail_reason")
            raise ConfigError(
                f"--trial {number}: trial {number} is {r['state']}"
                + (f" ({reason})" if isinstance(reason, str) else "")
                + "; only complete trials can be exported"
            )
        return number
    front = pareto_front(df, objectives) if not df.empty else df
    if front.empty:
        raise ConfigError("the study has no complete trial on its Pareto front yet")
    if knee:
        return int(front.loc[knee_point(front, objectives), "number"])
    name = trial.removeprefix("best:")
    if name not in objectives:
        raise ConfigError(f"--trial best:{name}: not an objective of this study (valid: {', '.join(objectives)})")
    col = front[name].astype(float)
    idx = col.idxmin() if objectives[name] == "minimize" else col.idxmax()
    return int(front.loc[idx, "number"])


def export_command(study_file: str | None, overrides=()) -> str:
    """The shell command that exports a study's recommended (knee) student."""
    sets = "".join(f" --set {shlex.quote(o)}" for o in overrides)
    return f"gped-search export {shlex.quote(study_file or 'STUDY.yaml')}{sets} --knee --out exported/"


def parameter_importances(study: optuna.Study, cache_dir: str | Path | None = None) -> dict[str, dict[str, float]]:
    """Optuna's parameter importances (fANOVA, seed 0, so a report is reproducible) per objective; {} with
    too few trials. With ``cache_dir`` they are saved there (``.importances.json``) under a digest of the
    complete trials' parameters and values, and read back while those are unchanged: fANOVA imports
    scikit-learn and fits forests, about a second of every ``report``."""
    import hashlib
    import json

    names = study.user_attrs.get("objectives", [])
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(done) < 3 or not any(len({str(t.params.get(k)) for t in done}) > 1 for k in done[0].params):
        return {}
    key = hashlib.sha256(
        json.dumps([optuna.__version__, names, [[t.number, t.params, t.values] for t in done]], default=str).encode()
    ).hexdigest()
    path = Path(cache_dir) / ".importances.json" if cache_dir is not None else None
    try:
        saved = json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        saved = {}
    if isinstance(saved, dict) and saved.get("key") == key and isinstance(saved.get("importances"), dict):
        return saved["importances"]
    from optuna.importance import FanovaImportanceEvaluator

    out = {}
    for i, name in enumerate(names):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[name] = optuna.importance.get_param_importances(
                    study, evaluator=FanovaImportanceEvaluator(seed=0), target=lambda t, i=i: t.values[i]
                )
        except (ValueError, RuntimeError):  # e.g. a parameter no two trials differ in
            continue
    if path is not None and path.parent.is_dir():
        try:
            path.write_text(json.dumps({"key": key, "importances": out}, indent=1) + "\n")
        except OSError:  # a read-only copy of a report folder: only slower next time
            pass
    return out


_TEACHER_KEYS = (
    "teacher_acc",
    "teacher_nll",
    "teacher_ece",
    "teacher_val_acc",
    "teacher_val_nll",
    "teacher_mc_floor_kl",
    "iterations",
    "seconds",
    "ms_per_iteration",
    "test_samples",
    "bank_samples",
    "chains",
)


def write_study_report(
    cfg: StudyConfig,
    study: optuna.Study,
    out: str | Path | None = None,
    compare: dict[str, pd.DataFrame] | None = None,
    export_cmd: str | None = None,
) -> dict:
    """The study's report (``report.writer.write_report``) with its teacher, notes and importances."""
    from gped_search.report.writer import write_report

    teacher = study.user_attrs.get("teacher", {})
    teacher = {k: teacher[k] for k in _TEACHER_KEYS if k in teacher}
    saved = teacher_seconds_saved(study)
    extra = {k: round(v, 3) if isinstance(v, float) else v for k, v in saved.items()}
    notes = []
    if saved["completed_trials"]:
        notes.append(
            f"The teacher was sampled once ({saved['teacher_seconds']:,.0f} s) and shared by all "
            f"{saved['completed_trials']} complete trials, which ran for {saved['trial_seconds']:,.0f} s of "
            f"wall time. Sampling it again for every trial would have cost {saved['saved_seconds']:,.0f} s "
            f"more: sharing saved {100 * saved['saved_fraction']:.1f} % of the total (saved_fraction)."
        )
    if "teacher_mc_floor_kl" in teacher:
        notes.append(
            f"Monte-Carlo floor KL {teacher['teacher_mc_floor_kl']:.4g} nats: the KL between two halves of "
            "the teacher's own samples; a student's KL near it is as close as this teacher estimate can tell."
        )
    if "test_samples" in teacher:
        notes.append(
            f"The teacher's test figures average {teacher['test_samples']:,} posterior samples "
            "(thinned SGLD iterates), not test images."
        )
    from .strategy_notes import strategy_notes

    notes += strategy_notes(study)
    used = study_status(study).get("teachers_used", {})
    if len(used) > 1:
        warn = ", ".join(f"{k}: {n}" for k, n in used.items())
        extra["WARNING: trials trained against different teachers (key@iterations: trials)"] = warn
        notes.append(f"WARNING: trials trained against different teachers (key@iterations: trials): {warn}.")
    from .report_data import report_extras

    exported = live_exports(study)
    df = trials_frame(study)
    if cfg.search.artifacts:  # what the report reads (pruned students, downstream and robustness results): cached
        from gped_search.store.files import fetch_study_folder

        _prefetch_pruned(cfg, df)
        for folder in ("downstream", "robustness"):
            fetch_study_folder(cfg, folder)
    return write_report(
        df,
        study_objectives(study),
        out or cfg.out_dir,
        title=cfg.name,
        settings=study.user_attrs.get("config", to_dict(cfg)),
        teacher=teacher,
        compare=compare or None,
        extra=extra,
        notes=notes,
        importances=parameter_importances(study, cfg.out_dir),  # the study's folder, wherever the report goes
        exported=exported,
        export_command=export_cmd,
        extras=report_extras(cfg.out_dir, study, df),
    )


def study_file(cfg: StudyConfig, stored: str | None) -> Path | None:
    """A file the study recorded, in its report folder; with ``search.artifacts``, fetched from the store (verified)."""
    from gped_search.store import fetch_study_file

    return fetch_study_file(cfg, stored, study_path(cfg.out_dir, stored))


def _prefetch_pruned(cfg: StudyConfig, df: pd.DataFrame) -> None:
    import logging

    from gped_search.errors import StoreError

    from .report_data import pruned_trials

    for n in pruned_trials(df):
        try:
            study_file(cfg, df.loc[df["number"] == n, "checkpoint"].iloc[0])
        except StoreError as e:  # the report goes on without this student's layer table
            logging.getLogger(__name__).warning("%s", e)
