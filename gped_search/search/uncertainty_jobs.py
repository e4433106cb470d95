"""The commands that score a study's students beyond its trials: ``downstream`` (OOD detection and
uncertainty ranking) and ``robustness`` (FGSM / PGD), each against the teacher and a deterministic
baseline; they write into the study folder, where the report finds them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from gped_search.config import ConfigError, StudyConfig
from gped_search.report.tables import pareto_front
from gped_search.seeds import search_seed

from .results import study_objectives, trials_frame

__all__ = ["run_downstream", "run_robustness"]


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

    from .jobs import pick_trial, study_file
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
    teacher = load_teacher(study_file(cfg, study.user_attrs.get("teacher_artifact", TEACHER_FILE)), p.device)
    students = {}
    for n in numbers:
        row = df[df["number"] == n].iloc[0]
        model, _ = load_checkpoint(study_file(cfg, row["checkpoint"]), p.device)
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
    from gped_search.report.writer import markdown_table, save_png

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
        save_png(
            plot_roc(c, title=f"OOD detection vs {label} (predictive entropy)"),
            folder / f"roc_{label.replace(' ', '_')}.png",
        )
    save_png(plot_accuracy_rejection(curves["rejection"]), folder / "accuracy_rejection.png")
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
    from gped_search.report.writer import markdown_table, save_png

    seed = seed if seed is not None else search_seed(cfg)
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
    save_png(plot_robustness(table), folder / "robustness.png")
    return table, folder
