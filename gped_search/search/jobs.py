"""What the commands do with a finished study: pick a trial, write its report, export a student,
score students downstream. The command line parses arguments and calls these.
"""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from gped_search.config import ConfigError, StudyConfig, to_dict
from gped_search.report.tables import knee_point, pareto_front

from .results import live_exports, study_objectives, study_path, study_status, teacher_seconds_saved, trials_frame

__all__ = [
    "pick_trial",
    "export_command",
    "parameter_importances",
    "run_robustness",
    "write_study_report",
    "export_trial",
    "run_downstream",
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


def parameter_importances(study: optuna.Study) -> dict[str, dict[str, float]]:
    """Optuna's parameter importances (its default evaluator) per objective; {} with too few trials."""
    names = study.user_attrs.get("objectives", [])
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(done) < 3 or not any(len({str(t.params.get(k)) for t in done}) > 1 for k in done[0].params):
        return {}
    out = {}
    for i, name in enumerate(names):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[name] = optuna.importance.get_param_importances(study, target=lambda t, i=i: t.values[i])
        except (ValueError, RuntimeError):  # e.g. a parameter no two trials differ in
            continue
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
    used = study_status(study).get("teachers_used", {})
    if len(used) > 1:
        warn = ", ".join(f"{k}: {n}" for k, n in used.items())
        extra["WARNING: trials trained against different teachers (key@iterations: trials)"] = warn
        notes.append(f"WARNING: trials trained against different teachers (key@iterations: trials): {warn}.")
    exported = live_exports(study)
    return write_report(
        trials_frame(study),
        study_objectives(study),
        out or cfg.out_dir,
        title=cfg.name,
        settings=study.user_attrs.get("config", to_dict(cfg)),
        teacher=teacher,
        compare=compare or None,
        extra=extra,
        notes=notes,
        importances=parameter_importances(study),
        exported=exported,
        export_command=export_cmd,
    )


_PRIVATE = ("state", "checkpoint", "worker", "artifact_id", "artifact_error", "teacher_artifact")
"""Trial attributes that describe this machine, not the student: never written into exported files."""


def export_trial(
    cfg: StudyConfig,
    study: optuna.Study,
    out: str | Path,
    *,
    trial: str | None = None,
    knee: bool = False,
    formats: tuple[str, ...] = ("checkpoint", "pt2"),
    best_under: float | None = None,
    require: tuple = (),
) -> dict:
    """Export one trial's student (``exporting.export_student``) and record it on the study.

    ``best_under`` (bytes, fp32) and ``require`` (``(metric, op, value)``, :mod:`.selection`) first keep the
    complete trials whose validation figures fit; then ``--knee`` / ``best:<objective>`` pick among them
    (default: the best on the study's first objective). The result's ``warning`` says when the knee's
    validation accuracy is far below another front member's."""
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
    from gped_search.exporting import FORMATS, export_student  # torch: after the choice's errors

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"--format: unknown {bad}; valid: {', '.join(FORMATS)}")
    row = df[df["number"] == number].iloc[0]
    ckpt = _study_file(cfg, row.get("checkpoint"))
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
    if row.get("precision") == "int8" and "onnx-int8" not in formats:
        formats = (*formats, "onnx-int8")  # an int8 trial is deployed as int8
    kw = _int8_inputs(cfg) if "onnx-int8" in formats else {}
    res = export_student(str(ckpt), out, formats, meta=meta, **kw)
    _publish_export(cfg, number, res["files"])
    exported = dict(study.user_attrs.get("exported_trials", {}))
    exported[str(number)] = str(Path(out).resolve())  # found from any directory (live_exports)
    study.set_user_attr("exported_trials", exported)  # starred in the report
    return {"trial": number, "warning": warning, **res}


def _study_file(cfg: StudyConfig, stored: str | None) -> Path | None:
    """A file the study recorded, in its report folder; with ``search.artifacts``, fetched from the store (verified)."""
    from gped_search.store import fetch_study_file

    return fetch_study_file(cfg, stored, study_path(cfg.out_dir, stored))


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


_DOWNSTREAM_COLUMNS = (
    "model",
    "ood",
    "estimator",
    "acc",
    "nll",
    "auroc_predictive_entropy",
    "auroc_mutual_information",
    "auroc_expected_entropy",
    "auroc_max_prob",
    "aupr_predictive_entropy",
    "rank_spearman",
    "rank_kendall",
    "rank_topk_overlap",
    "rejection_auc",
)


def _teacher_and_students(cfg: StudyConfig, study: optuna.Study, trials: str | None, p) -> tuple:
    """The study's teacher artifact and the named trials' students (default: up to 3 front trials,
    spread over the first objective), keyed ``#<number> <arch>``."""
    from gped_search.checkpoints import load_checkpoint
    from gped_search.posterior.artifact import load_teacher

    from .teacher import TEACHER_FILE  # imports torch: only here, so export's argument errors come fast

    df = trials_frame(study)
    objectives = study_objectives(study)
    if trials:
        numbers = [int(pick_trial(df, objectives, t.strip(), False)) for t in trials.split(",")]
    else:
        front = pareto_front(df, objectives)
        if front.empty:
            raise ConfigError("the study has no complete trial on its front; name --trials")
        idx = np.unique(np.linspace(0, len(front) - 1, min(3, len(front))).round().astype(int))
        numbers = [int(front.iloc[i]["number"]) for i in idx]
    teacher = load_teacher(_study_file(cfg, study.user_attrs.get("teacher_artifact", TEACHER_FILE)), p.device)
    students = {}
    for n in numbers:
        row = df[df["number"] == n].iloc[0]
        model, _ = load_checkpoint(_study_file(cfg, row["checkpoint"]), p.device)
        students[f"#{n} {row.get('arch', '')}".strip()] = model.eval()
    return teacher, students


def run_downstream(
    cfg: StudyConfig,
    study: optuna.Study,
    *,
    trials: str | None = None,
    oods: list[str] = (),
    baseline_steps: int = 5000,
    out: str | Path | None = None,
) -> tuple[pd.DataFrame, Path]:
    """OOD detection and uncertainty ranking of the teacher, front students and a deterministic baseline.

    Writes ``downstream.csv``, ``downstream.md``, ROC and accuracy-rejection plots into ``out``
    (default ``reports/<name>/downstream/``); returns the table (its main columns) and the folder.
    """
    from gped_search.data.transforms import check_ood_spec
    from gped_search.downstream import downstream_table, train_baseline
    from gped_search.engine import prepare
    from gped_search.report.figures import plot_accuracy_rejection, plot_roc
    from gped_search.report.writer import _png, markdown_table

    for o in oods:  # before the data and the teacher are loaded
        try:
            check_ood_spec(cfg.data.dataset, o)
        except ValueError as e:
            raise ConfigError(f"--ood {o}: {e}") from None
    p = prepare(cfg)
    teacher, students = _teacher_and_students(cfg, study, trials, p)
    oods = list(oods) or ([cfg.data.ood.value] if cfg.data.ood else []) + [f"occlusion:{p.bundle.in_shape[-1] // 2}"]
    baseline = train_baseline(p, steps=baseline_steps, seed=cfg.seed) if baseline_steps > 0 else None
    table, curves = downstream_table(p, teacher, students, baseline, oods)
    folder = Path(out) if out else cfg.out_dir / "downstream"
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "downstream.csv", index=False)
    cols = [c for c in _DOWNSTREAM_COLUMNS if c in table.columns]
    (folder / "downstream.md").write_text(
        f"# {cfg.name}: downstream uncertainty\n\n" + markdown_table(table[cols]) + "\n"
    )
    for label, c in curves["roc"].items():
        _png(
            plot_roc(c, title=f"OOD detection vs {label} (predictive entropy)"),
            folder / f"roc_{label.replace(' ', '_')}.png",
        )
    _png(plot_accuracy_rejection(curves["rejection"]), folder / "accuracy_rejection.png")
    return table[cols], folder


def run_robustness(
    cfg: StudyConfig,
    study: optuna.Study,
    *,
    trials: str | None = None,
    eps: tuple[float, ...] = (0.05, 0.1, 0.2),
    attacks: tuple[str, ...] = ("fgsm", "pgd"),
    pgd_steps: int = 10,
    n: int = 1000,
    baseline_steps: int = 5000,
    out: str | Path | None = None,
    seed: int | None = None,
) -> tuple[pd.DataFrame, Path]:
    """Accuracy, predictive entropy and MI under FGSM / PGD (L-infinity) of the teacher (attacked through its
    posterior predictive over the bank), front students and a deterministic baseline, on the first ``n``
    test images. Writes ``robustness.csv``, ``robustness.md`` and ``robustness.png`` into ``out``
    (default ``reports/<name>/robustness/``). ``seed`` (default: the search seed, else the study seed)
    seeds the baseline's initialisation and minibatches and PGD's random starts."""
    from gped_search.downstream import train_baseline
    from gped_search.engine import prepare, teacher_arch_for
    from gped_search.metrics import adversarial as adv
    from gped_search.models import build
    from gped_search.report.figures import plot_robustness
    from gped_search.report.writer import _png, markdown_table

    seed = seed if seed is not None else (cfg.search.seed if cfg.search.seed is not None else cfg.seed)
    p = prepare(cfg)
    teacher, students = _teacher_and_students(cfg, study, trials, p)
    x, y = p.bundle.test.x[:n], p.bundle.test.y[:n]
    if not teacher.bank:
        raise ConfigError("the teacher artifact has no sample bank (teacher.bank_size 0): nothing to attack")
    t_model = build(teacher_arch_for(p)).to(p.device).eval()
    temperature = cfg.distill.temperature
    models: dict[str, tuple] = {
        "teacher (SGLD, bank)": (
            adv.teacher_probs_fn(t_model, teacher.bank, temperature),
            adv.teacher_mi_fn(t_model, teacher.bank, temperature),
        )
    }
    for name, model in students.items():
        models[f"student {name}"] = (adv.student_probs_fn(model), adv.student_mi_fn(model))
    if baseline_steps > 0:
        base = train_baseline(p, steps=baseline_steps, seed=seed)
        models["baseline (deterministic)"] = (adv.baseline_probs_fn(base), None)
    rows = []
    for name, (probs, mi) in models.items():
        for r in adv.attack_record(probs, x, y, eps, attacks, steps=pgd_steps, seed=seed, mi_fn=mi):
            rows.append({"model": name, **r})
    table = pd.DataFrame(rows)
    folder = Path(out) if out else cfg.out_dir / "robustness"
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "robustness.csv", index=False)
    (folder / "robustness.md").write_text(
        f"# {cfg.name}: adversarial robustness ({len(x)} test images, L-infinity, PGD {pgd_steps} steps)\n\n"
        + markdown_table(table)
        + "\n"
    )
    _png(plot_robustness(table), folder / "robustness.png")
    return table, folder
