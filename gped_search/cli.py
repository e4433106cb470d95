"""``gped-search``: distil, search, inspect and export students from the command line.

Every user error (bad study file, missing data, corrupt artifact or checkpoint, diverging sampler,
unreachable storage) prints one line ``gped-search: error: ...`` and exits with status 2; what a
study has already recorded stays in its storage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser"]

EXAMPLES = """examples:
  gped-search run studies/quickstart.yaml                  # sample the teacher, search 8 students
  gped-search run studies/mnist_mlp.yaml --workers 4       # 4 processes, one journal-file storage
  gped-search run studies/mnist_mlp.yaml --batch 8         # 8 trials at a time, students in lockstep
  gped-search run studies/mnist_mlp.yaml --set teacher.iterations=1000000   # extend the finished chain
  gped-search status studies/quickstart.yaml               # trials, front, and a chain in progress or paused
  gped-search pareto studies/quickstart.yaml --objectives kl,bytes_fp32
  gped-search report studies/quickstart.yaml               # reports/quickstart/index.html
  gped-search export studies/quickstart.yaml --knee --out exported/
  gped-search distill studies/quickstart.yaml --set distill.target_mode=online
  gped-search distill studies/paper/mlp_mask0_distill_1e6.yaml --threads 1   # re-run to resume after a stop
  gped-search evaluate exported/student.pt --ood fashion_mnist
  gped-search compare reports/headline --out reports/headline_comparison   # grid vs pruning vs search
"""


def _study_args(p: argparse.ArgumentParser, storage: bool = True) -> None:
    p.add_argument("study", help="study file (YAML), e.g. studies/quickstart.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a study setting, e.g. --set teacher.iterations=5000 (repeatable)")
    if storage:
        p.add_argument("--storage", help="Optuna storage URL (default: the study file's, else "
                                         "reports/<name>/study.db, or study.journal with --workers)")


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 1")
    return n


def _threads_arg(p: argparse.ArgumentParser, default_note: str = "") -> None:
    p.add_argument("--threads", type=_positive, metavar="N", default=1,
                   help="torch CPU threads per process (default 1" + default_note + "): these networks are "
                   "small, and more threads than free cores made the quickstart 3x slower beside one busy "
                   "process (1 thread: 1.12x)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gped-search", description="Distil a Bayesian (SGLD) teacher's posterior "
                                 "expectations into small students and search them with Optuna.",
                                 epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("distill", help="run the teacher and distil one student online; write a JSON record")
    _study_args(p, storage=False)
    p.add_argument("--out", help="output folder (default reports/<name>/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--restart", action="store_true", help="discard the chain checkpoint and start the chain "
                   "again (default: resume a stopped chain, extend a finished one to teacher.iterations)")
    _threads_arg(p)

    p = sub.add_parser("run", help="run or resume a search study")
    _study_args(p)
    p.add_argument("--n-trials", type=int, help="completed trials the study should have (default: the study file's)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--batch", type=int, help="trials asked together and trained in lockstep against the teacher "
                   "(default: search.batch of the study file, 1)")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the study's status as JSON at the end instead of "
                   "one line per finished trial and a summary")
    p.add_argument("--restart", action="store_true", help="when the teacher must be sampled, discard its chain "
                   "checkpoint and start from iteration 0 (default: resume a stopped chain, extend a shorter "
                   "one; a finished artifact of the right length is always reused)")
    _threads_arg(p, " per worker")

    p = sub.add_parser("status", help="trials by state, Pareto front size, teacher; teacher chain progress "
                       "(iterations done of the total, rate, time left; running, paused or done)")
    _study_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("pareto", help="print the Pareto front as a table")
    _study_args(p)
    p.add_argument("--objectives", help="comma-separated metrics (default: the study's objectives); "
                                        "append :max to maximise, e.g. kl,ood_auroc:max")
    p.add_argument("--csv", help="also write the front to this CSV file")

    p = sub.add_parser("report", help="write reports/<name>/index.html, summary.md, CSV tables and plots")
    _study_args(p)
    p.add_argument("--compare", action="append", default=[], metavar="STUDY",
                   help="another study file with the same objectives (e.g. its grid baseline): fronts on one figure")
    p.add_argument("--out", help="output folder (default reports/<name>/)")

    p = sub.add_parser("compare", help="grid vs pruning vs search over seeds: fronts, hypervolume against "
                                       "trials and seconds, test metrics of each front (one report per setting)")
    p.add_argument("studies", nargs="+", metavar="STUDY",
                   help="report folders (reports/<name>/), a folder of them (reports/headline), "
                        "storage URLs or study files")
    p.add_argument("--out", required=True, help="output folder for comparison.md, figures and CSV tables")
    p.add_argument("--budgets", help="comma-separated trial counts to compare hypervolume at "
                                     "(default: the grid's size and the longest study's)")

    p = sub.add_parser("export", help="export a trial's student: checkpoint, torch.export program, ONNX, model card")
    _study_args(p)
    pick = p.add_mutually_exclusive_group(required=True)
    pick.add_argument("--trial", help="trial number, or best:<objective> (the front's best on that objective)")
    pick.add_argument("--knee", action="store_true", help="the knee of the Pareto front")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", default="checkpoint,pt2", help="comma-separated: checkpoint, pt2, onnx "
                                                              "(default checkpoint,pt2)")

    p = sub.add_parser("downstream", help="OOD detection and uncertainty ranking: teacher vs front students "
                                          "vs a deterministic baseline (table + ROC / accuracy-rejection plots)")
    _study_args(p)
    p.add_argument("--trials", help="comma-separated trial numbers (default: up to 3 front trials, spread over "
                                    "the first objective)")
    p.add_argument("--ood", action="append", default=[], metavar="SET",
                   help="OOD set: a dataset (fashion_mnist, mnist) or occlusion:<size>; repeatable "
                        "(default: the study's data.ood and occlusion:<half the image side>)")
    p.add_argument("--baseline-steps", type=int, default=5000, help="Adam steps of the deterministic baseline "
                                                                      "(0 = no baseline)")
    p.add_argument("--out", help="output folder (default reports/<name>/downstream/)")

    p = sub.add_parser("evaluate", help="evaluate one exported student: accuracy, calibration, OOD detection")
    p.add_argument("checkpoint", help="student checkpoint (.pt) written by export or distill")
    p.add_argument("--ood", help="OOD test set: fashion_mnist, mnist, or 'occlusion:<size>'")
    p.add_argument("--data-root", help="data root (default: $GPED_DATA_ROOT, then ../shared/data)")
    p.add_argument("--teacher", help="the study's teacher artifact (teacher.pt): adds KL and ranking vs the teacher")
    p.add_argument("--json", action="store_true", help="print JSON")
    return ap


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("gped-search")
    except Exception:
        return "unknown"


def _load(args):
    from gped_search.config import load_study

    return load_study(args.study, args.overrides)


def _print_table(df) -> None:
    import pandas as pd

    with pd.option_context("display.max_columns", 30, "display.width", 200, "display.max_colwidth", 40,
                           "display.float_format", lambda v: f"{v:.4g}"):
        print(df.to_string(index=False))


def cmd_distill(args) -> int:
    from gped_search.api import distill

    cfg = _load(args)
    import torch

    torch.set_num_threads(args.threads)
    rec = distill(cfg, progress=not args.no_progress, out_dir=args.out, restart=args.restart)
    s, t = rec["student"], rec["teacher"]
    print(json.dumps({"teacher_acc": t["teacher_acc"], "teacher_nll": t["teacher_nll"], "kl": s["kl"],
                      "student_acc": s["student_acc"], "params": s["params"], "outputs": rec["outputs"]}, indent=2))
    return 0


def _export_command(study_file: str | None, overrides=()) -> str:
    import shlex

    sets = "".join(f" --set {shlex.quote(o)}" for o in overrides)
    return f"gped-search export {shlex.quote(study_file or 'STUDY.yaml')}{sets} --knee --out exported/"


def _importances(study) -> dict:
    """Optuna's parameter importances (its default evaluator) per objective; {} with too few trials."""
    import warnings

    import optuna

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


def _report(cfg, study, out=None, compare=(), study_file: str | None = None, overrides=()) -> dict:
    from gped_search.config import load_study, to_dict
    from gped_search.report.writer import write_report
    from gped_search.search import open_study, study_status, teacher_seconds_saved, trials_frame

    others = {}
    for path in compare:
        ocfg = load_study(path)
        others[ocfg.name] = trials_frame(open_study(ocfg, create=False))
    teacher = study.user_attrs.get("teacher", {})
    teacher = {k: teacher[k] for k in ("teacher_acc", "teacher_nll", "teacher_ece", "teacher_val_acc",
                                       "teacher_val_nll", "teacher_mc_floor_kl", "iterations", "seconds",
                                       "ms_per_iteration", "test_samples", "bank_samples", "chains") if k in teacher}
    saved = teacher_seconds_saved(study)
    extra = {k: round(v, 3) if isinstance(v, float) else v for k, v in saved.items()}
    notes = []
    if saved["completed_trials"]:
        notes.append(f"The teacher was sampled once ({saved['teacher_seconds']:,.0f} s) and shared by all "
                     f"{saved['completed_trials']} complete trials, which ran for {saved['trial_seconds']:,.0f} s of "
                     f"wall time. Sampling it again for every trial would have cost {saved['saved_seconds']:,.0f} s "
                     f"more: sharing saved {100 * saved['saved_fraction']:.1f} % of the total (saved_fraction).")
    if "teacher_mc_floor_kl" in teacher:
        notes.append(f"Monte-Carlo floor KL {teacher['teacher_mc_floor_kl']:.4g} nats: the KL between two halves of "
                     "the teacher's own samples; a student's KL near it is as close as this teacher estimate can tell.")
    if "test_samples" in teacher:
        notes.append(f"The teacher's test figures average {teacher['test_samples']:,} posterior samples "
                     "(thinned SGLD iterates), not test images.")
    used = study_status(study).get("teachers_used", {})
    if len(used) > 1:
        warn = ", ".join(f"{k}: {n}" for k, n in used.items())
        extra["WARNING: trials trained against different teachers (key@iterations: trials)"] = warn
        notes.append(f"WARNING: trials trained against different teachers (key@iterations: trials): {warn}.")
    objectives = dict(zip(study.user_attrs["objectives"], [d.name.lower() for d in study.directions]))
    exported = {int(k): v for k, v in study.user_attrs.get("exported_trials", {}).items()}
    cmd = _export_command(study_file, overrides)
    return write_report(trials_frame(study), objectives, out or cfg.out_dir, title=cfg.name,
                        settings=study.user_attrs.get("config", to_dict(cfg)), teacher=teacher,
                        compare=others or None, extra=extra, notes=notes, importances=_importances(study),
                        exported=exported, export_command=cmd)


def cmd_run(args) -> int:
    from gped_search.search import run_study, storage_url, study_status

    cfg = _load(args)
    if args.batch is not None:
        cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, batch=args.batch))
    study = run_study(cfg, n_trials=args.n_trials, timeout=args.timeout, workers=args.workers,
                      storage=args.storage, progress=not args.no_progress, threads=args.threads,
                      restart=args.restart, announce=not args.json)
    st = study_status(study, storage_url(cfg, args.storage, args.workers))
    report = None if args.no_report else _report(cfg, study, study_file=args.study,
                                                      overrides=args.overrides)["written"]["index_html"]
    if args.json:
        print(json.dumps({**st, "report": report}, indent=2))
        return 0
    states = ", ".join(f"{n} {k.lower()}" for k, n in st["trials"].items()) or "no trials"
    print(f"study {st['study']}: {states}; {st['front_size']} on the Pareto front over "
          + ", ".join(st["objectives"]))
    if report:
        print(f"report: {report}")
        print(f"export the recommended (knee) student: {_export_command(args.study, args.overrides)}")
    return 0


def _open(args):
    from gped_search.search import open_study

    cfg = _load(args)
    return cfg, open_study(cfg, args.storage, create=False)


def _chains(cfg) -> dict:
    """Progress of the study's teacher chain and of a ``distill`` run's chain, where they exist."""
    from gped_search.posterior.checkpoint import CHAIN_DIR, DISTILL_CHAIN_DIR, chain_status

    out = {}
    for label, folder in (("teacher chain", CHAIN_DIR), ("distill chain", DISTILL_CHAIN_DIR)):
        st = chain_status(cfg.out_dir / folder)
        if st is not None:
            out[label] = st
    return out


def _chain_line(label: str, st: dict) -> str:
    total = st["total"]
    line = f"{label}: {st['state']}, iteration {st['iteration']:,}" + (f" of {total:,}" if total else "")
    if st.get("rate_it_per_s"):
        line += f", {st['rate_it_per_s']:.1f} it/s"
    if st.get("seconds_left") and st["state"] != "done":
        left = st["seconds_left"]
        line += f", {left / 3600:.1f} h left" if left >= 3600 else f", {left / 60:.1f} min left"
    if st["state"] == "paused":
        line += f" (resumes from the checkpoint at {st['checkpoint_iteration'] or 0:,} on the next run/distill)"
    return line


def cmd_status(args) -> int:
    from gped_search.search import storage_url, study_status
    from gped_search.search.storage import StudyError

    cfg = _load(args)
    chains = _chains(cfg)
    try:
        from gped_search.search import open_study

        study = open_study(cfg, args.storage, create=False)
    except StudyError:
        if not chains:
            raise
        study = None  # a `distill` run, or a study whose teacher is still being sampled
    st = study_status(study, storage_url(cfg, args.storage)) if study is not None else {"study": cfg.name}
    st["chains"] = chains
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    if study is not None:
        print(f"study {st['study']}  ({st['storage']})")
        print("trials: " + ", ".join(f"{k.lower()} {v}" for k, v in st["trials"].items()) if st["trials"]
              else "trials: none")
        print(f"Pareto front: {st['front_size']} trials over "
              + ", ".join(f"{k} ({v})" for k, v in st["objectives"].items()))
        if st["teacher"]:
            print("teacher: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) and not v.is_integer() else f"{k} {v:g}" for k, v in st["teacher"].items()))
        if len(st.get("teachers_used", {})) > 1:
            print("warning: trials were trained against different teachers (key@iterations: trials): "
                  + ", ".join(f"{k}: {n}" for k, n in st["teachers_used"].items()))
    else:
        print(f"study {cfg.name}: no Optuna study yet (a `distill` run, or a teacher still being sampled)")
    for label, c in chains.items():
        print(_chain_line(label, c))
    return 0


def _objectives_arg(text: str | None, study) -> dict[str, str]:
    from gped_search.config import ConfigError

    if not text:
        return dict(zip(study.user_attrs["objectives"], [d.name.lower() for d in study.directions]))
    out = {}
    for part in text.split(","):
        name, _, d = part.strip().partition(":")
        d = {"": "minimize", "min": "minimize", "max": "maximize", "minimize": "minimize",
             "maximize": "maximize"}.get(d)
        if not name or d is None:
            raise ConfigError(f"--objectives: {part!r} is not NAME or NAME:min|max")
        out[name] = d
    return out


def cmd_pareto(args) -> int:
    from gped_search.config import ConfigError
    from gped_search.report.tables import pareto_front
    from gped_search.report.writer import front_columns
    from gped_search.search import trials_frame

    _, study = _open(args)
    df = trials_frame(study)
    objectives = _objectives_arg(args.objectives, study)
    missing = [k for k in objectives if k not in df.columns]
    if missing:
        raise ConfigError(f"--objectives: no trial recorded {missing}")
    front = pareto_front(df, objectives)
    if front.empty:
        print("Pareto front: empty (no complete, feasible trial yet)")
        return 0
    from gped_search.report.writer import selection_note

    print(selection_note(df[df["state"] == "COMPLETE"]))
    print(f"Pareto front over {', '.join(f'{k} ({v})' for k, v in objectives.items())}: {len(front)} trials")
    _print_table(front[front_columns(front, objectives)])
    if args.csv:
        front.to_csv(args.csv, index=False)
    return 0


def cmd_report(args) -> int:
    cfg, study = _open(args)
    res = _report(cfg, study, args.out, args.compare, study_file=args.study, overrides=args.overrides)
    print(f"wrote {res['written']['index_html']} and {res['written']['summary_md']} "
          f"({res['summary']['front_size']} trials on the front)")
    return 0


def cmd_compare(args) -> int:
    from gped_search.config import ConfigError
    from gped_search.report.compare import write_comparison
    from gped_search.search.collect import collect_runs

    budgets = None
    if args.budgets:
        try:
            budgets = [int(b) for b in args.budgets.split(",")]
        except ValueError:
            raise ConfigError(f"--budgets {args.budgets!r}: give comma-separated whole numbers, e.g. 14,42") from None
    runs = collect_runs(args.studies)
    res = write_comparison(runs, args.out, budgets)
    for setting, summary in res["summaries"].items():
        print(f"{setting}:")
        _print_table(summary)
    print(f"wrote {res['written']['comparison_md']} ({len(runs)} studies)")
    return 0


def _pick(df, objectives: dict, trial: str | None, knee: bool) -> int:
    from gped_search.config import ConfigError
    from gped_search.report.tables import knee_point, pareto_front

    if trial is not None and not trial.startswith("best:"):
        try:
            number = int(trial)
        except ValueError:
            raise ConfigError(f"--trial {trial!r}: give a number or best:<objective>") from None
        row = df[df["number"] == number]
        if row.empty:
            raise ConfigError(f"trial {number} does not exist (the study has {len(df)} trials)")
        r = row.iloc[0]
        if r["state"] != "COMPLETE":
            reason = r.get("fail_reason")
            raise ConfigError(f"trial {number} is {r['state']}" + (f" ({reason})" if isinstance(reason, str) else "")
                              + ": only complete trials can be exported")
        return number
    front = pareto_front(df, objectives) if not df.empty else df
    if front.empty:
        raise ConfigError("the study has no complete trial on its Pareto front yet")
    if knee:
        return int(front.loc[knee_point(front, objectives), "number"])
    name = trial.removeprefix("best:")
    if name not in objectives:
        raise ConfigError(f"--trial best:{name}: not an objective of this study ({', '.join(objectives)})")
    col = front[name].astype(float)
    idx = col.idxmin() if objectives[name] == "minimize" else col.idxmax()
    return int(front.loc[idx, "number"])


def cmd_export(args) -> int:
    import numpy as np

    from gped_search.config import ConfigError
    from gped_search.exporting import export_student
    from gped_search.search import trials_frame
    from gped_search.search.results import study_path

    cfg, study = _open(args)
    df = trials_frame(study)
    objectives = _objectives_arg(None, study)
    number = _pick(df, objectives, args.trial, args.knee)
    row = df[df["number"] == number].iloc[0]
    ckpt = study_path(cfg.out_dir, row.get("checkpoint"))
    if ckpt is None or not ckpt.is_file():
        raise ConfigError(f"trial {number}: its checkpoint {row.get('checkpoint')!r} is not in {cfg.out_dir} "
                          "(give the study's report folder with --set report_dir=...)")
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    bad = [f for f in formats if f not in ("checkpoint", "pt2", "onnx")]
    if bad:
        raise ConfigError(f"--format: unknown {bad}; valid: checkpoint, pt2, onnx")
    # a DataFrame row holds numpy scalars: np.int64 (params, macs, seed, ...) is no Python int
    # no paths, hosts or storage ids in exported files: they describe this machine, not the student
    private = ("state", "checkpoint", "worker", "artifact_id", "artifact_error", "teacher_artifact")
    metrics = {k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()
               if k not in private and isinstance(v, (int, float, str, np.integer, np.floating, np.bool_))
               and not (isinstance(v, float) and v != v)}
    meta = {"study": cfg.name, "trial": number, "metrics": metrics,
            "objectives": {k: float(row[k]) for k in objectives}}
    res = export_student(str(ckpt), args.out, formats, meta=meta)
    exported = dict(study.user_attrs.get("exported_trials", {}))
    exported[str(number)] = str(args.out)
    study.set_user_attr("exported_trials", exported)  # starred in the report
    print(json.dumps({"trial": number, **{k: v for k, v in res.items() if k in ("files", "verification", "dynamic_batch")}},
                     indent=2, default=str))
    return 0


def cmd_evaluate(args) -> int:
    import torch

    from gped_search.config import ConfigError, Dataset, study_from_dict
    from gped_search.data import make_bundle
    from gped_search.export import load_checkpoint
    from gped_search.metrics.downstream import (
        downstream_record,
        ood_metrics,
        rejection_auc,
        uncertainty_scores,
    )
    from gped_search.metrics.quality import predictive_metrics, student_outputs
    from gped_search.posterior.artifact import load_teacher

    model, meta = load_checkpoint(args.checkpoint)
    cfg = study_from_dict(meta.get("config") or {})
    data = cfg.data
    if args.data_root:
        data = dataclasses.replace(data, root=args.data_root)
    ood_mask = None
    if args.ood and args.ood.startswith("occlusion:"):
        try:
            ood_mask = int(args.ood.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"--ood {args.ood!r}: use occlusion:<size in pixels>") from None
        data = dataclasses.replace(data, ood=None)
    elif args.ood:
        try:
            data = dataclasses.replace(data, ood=Dataset(args.ood))
        except ValueError:
            raise ConfigError(f"--ood {args.ood!r}: use one of {[d.value for d in Dataset]} or occlusion:<size>") \
                from None
    bundle = make_bundle(data, cfg.seed, "cpu")
    model.eval()
    s_test = student_outputs(model, bundle.test.x)
    rec = {"checkpoint": args.checkpoint, "dataset": data.dataset.value, "n_test": len(bundle.test)}
    rec.update(predictive_metrics(s_test["predictive"], bundle.test.y, "student"))
    sc = uncertainty_scores(s_test)
    rec["rejection_auc"] = rejection_auc(s_test["predictive"], bundle.test.y, sc["predictive_entropy"])
    out_x, ood_name = None, None
    if ood_mask is not None:
        occl = dataclasses.replace(data, mask_size=ood_mask, ood=None)
        out_x, ood_name = make_bundle(occl, cfg.seed + 1, "cpu").test.x, f"occlusion {ood_mask}px"
    elif bundle.ood is not None:
        out_x, ood_name = bundle.ood.x, data.ood.value
    s_ood = student_outputs(model, out_x) if out_x is not None else None
    if s_ood is not None:
        rec["ood"] = ood_name
        rec.update({f"ood_{k}": v for k, v in ood_metrics(sc, uncertainty_scores(s_ood)).items()})
    if args.teacher:
        t = load_teacher(args.teacher)
        if t.test["predictive"].shape[0] != len(bundle.test):
            raise ConfigError(f"--teacher {args.teacher}: made on another test set")
        from gped_search.metrics.quality import evaluate

        rec.update({k: v for k, v in evaluate(model, bundle.test.x, bundle.test.y, t.test).items()
                    if not k.startswith("student_")})
        teacher_ood = t.ood if (s_ood is not None and t.ood is not None and t.ood["predictive"].shape[0]
                                == s_ood["predictive"].shape[0]) else None
        rec.update(downstream_record(t.test, s_test, bundle.test.y, teacher_ood, s_ood if teacher_ood else None))
    rec = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in rec.items()}
    if args.json:
        print(json.dumps(rec, indent=2))
    else:
        for k, v in rec.items():
            print(f"{k:>28}  {v:.4f}" if isinstance(v, float) else f"{k:>28}  {v}")
    return 0


def cmd_downstream(args) -> int:
    from gped_search.api import prepare
    from gped_search.config import ConfigError
    from gped_search.downstream import downstream_table, train_baseline
    from gped_search.export import load_checkpoint
    from gped_search.posterior.artifact import load_teacher
    from gped_search.report.plots import plot_accuracy_rejection, plot_roc
    from gped_search.report.tables import pareto_front
    from gped_search.report.writer import _png, markdown_table
    from gped_search.search import trials_frame
    from gped_search.search.results import study_path
    from gped_search.search.teacher import TEACHER_FILE

    cfg, study = _open(args)
    df = trials_frame(study)
    objectives = _objectives_arg(None, study)
    if args.trials:
        numbers = [int(_pick(df, objectives, t.strip(), False)) for t in args.trials.split(",")]
    else:
        front = pareto_front(df, objectives)
        if front.empty:
            raise ConfigError("the study has no complete trial on its front; name --trials")
        idx = np.unique(np.linspace(0, len(front) - 1, min(3, len(front))).round().astype(int))
        numbers = [int(front.iloc[i]["number"]) for i in idx]
    p = prepare(cfg)
    teacher = load_teacher(study_path(cfg.out_dir, study.user_attrs.get("teacher_artifact", TEACHER_FILE)), p.device)
    students = {}
    for n in numbers:
        row = df[df["number"] == n].iloc[0]
        model, _ = load_checkpoint(study_path(cfg.out_dir, row["checkpoint"]), p.device)
        students[f"#{n} {row.get('arch', '')}".strip()] = model
    oods = args.ood or ([cfg.data.ood.value] if cfg.data.ood else []) + [f"occlusion:{p.bundle.in_shape[-1] // 2}"]
    baseline = train_baseline(p, steps=args.baseline_steps, seed=cfg.seed) if args.baseline_steps > 0 else None
    table, curves = downstream_table(p, teacher, students, baseline, oods)
    out = Path(args.out) if args.out else cfg.out_dir / "downstream"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "downstream.csv", index=False)
    cols = [c for c in ("model", "ood", "estimator", "acc", "nll", "auroc_predictive_entropy", "auroc_mutual_information",
                        "auroc_expected_entropy", "auroc_max_prob", "aupr_predictive_entropy", "rank_spearman",
                        "rank_kendall", "rank_topk_overlap", "rejection_auc") if c in table.columns]
    (out / "downstream.md").write_text(f"# {cfg.name}: downstream uncertainty\n\n" + markdown_table(table[cols])
                                       + "\n")
    for label, c in curves["roc"].items():
        _png(plot_roc(c, title=f"OOD detection vs {label} (predictive entropy)"),
             out / f"roc_{label.replace(' ', '_')}.png")
    _png(plot_accuracy_rejection(curves["rejection"]), out / "accuracy_rejection.png")
    _print_table(table[cols])
    print(f"wrote {out}/downstream.csv, downstream.md and plots")
    return 0


COMMANDS = {"distill": cmd_distill, "run": cmd_run, "status": cmd_status, "pareto": cmd_pareto,
            "report": cmd_report, "downstream": cmd_downstream, "export": cmd_export, "evaluate": cmd_evaluate,
            "compare": cmd_compare}


def _user_errors() -> tuple[type[BaseException], ...]:
    from gped_search.errors import USER_ERRORS

    return USER_ERRORS


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    errors = _user_errors()
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("gped-search: interrupted; what the study recorded is kept (re-run the command to resume)",
              file=sys.stderr)
        return 130
    except errors as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, OSError) and e.filename:
            msg = f"{e.strerror or type(e).__name__}: {e.filename}"
        from gped_search.search.storage import mask_url

        print(f"gped-search: error: {mask_url(msg)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
