"""``gped-search``: distil, search, inspect and export students from the command line.

Every user error (bad study file, missing data, corrupt artifact or checkpoint, diverging sampler,
unreachable storage) prints one line ``gped-search: error: ...`` and exits with status 2; what a
study has already recorded stays in its storage.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys

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
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a study setting, e.g. --set teacher.iterations=5000 (repeatable)",
    )
    if storage:
        p.add_argument(
            "--storage",
            help="Optuna storage URL (default: the study file's, else "
            "reports/<name>/study.db, or study.journal with --workers)",
        )


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 1")
    return n


def _threads_arg(p: argparse.ArgumentParser, default_note: str = "") -> None:
    p.add_argument(
        "--threads",
        type=_positive,
        metavar="N",
        default=1,
        help="torch CPU threads per process (default 1" + default_note + "): these networks are "
        "small, and more threads than free cores made the quickstart 3x slower beside one busy "
        "process (1 thread: 1.12x)",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="gped-search",
        description="Distil a Bayesian (SGLD) teacher's posterior "
        "expectations into small students and search them with Optuna.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("distill", help="run the teacher and distil one student online; write a JSON record")
    _study_args(p, storage=False)
    p.add_argument("--out", help="output folder (default reports/<name>/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard the chain checkpoint and start the chain "
        "again (default: resume a stopped chain, extend a finished one to teacher.iterations)",
    )
    _threads_arg(p)

    p = sub.add_parser("run", help="run or resume a search study")
    _study_args(p)
    p.add_argument(
        "--n-trials",
        type=int,
        help="completed trials the study should have (default: the study file's)",
    )
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument(
        "--batch",
        type=int,
        help="trials asked together and trained in lockstep against the teacher "
        "(default: search.batch of the study file, 1)",
    )
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the study's status as JSON at the end instead of one line per finished trial and a summary",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="when the teacher must be sampled, discard its chain "
        "checkpoint and start from iteration 0 (default: resume a stopped chain, extend a shorter "
        "one; a finished artifact of the right length is always reused)",
    )
    _threads_arg(p, " per worker")

    p = sub.add_parser(
        "status",
        help="trials by state, Pareto front size, teacher; teacher chain progress "
        "(iterations done of the total, rate, time left; running, paused or done)",
    )
    _study_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("pareto", help="print the Pareto front as a table")
    _study_args(p)
    p.add_argument(
        "--objectives",
        help="comma-separated metrics (default: the study's objectives); "
        "append :max to maximise, e.g. kl,ood_auroc:max",
    )
    p.add_argument("--csv", help="also write the front to this CSV file")

    p = sub.add_parser("report", help="write reports/<name>/index.html, summary.md, CSV tables and plots")
    _study_args(p)
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="STUDY",
        help="another study file with the same objectives (e.g. its grid baseline): fronts on one figure",
    )
    p.add_argument("--out", help="output folder (default reports/<name>/)")

    p = sub.add_parser(
        "compare",
        help="grid vs pruning vs search over seeds: fronts, hypervolume against "
        "trials and seconds, test metrics of each front (one report per setting)",
    )
    p.add_argument(
        "studies",
        nargs="+",
        metavar="STUDY",
        help="report folders (reports/<name>/), a folder of them (reports/headline), storage URLs or study files",
    )
    p.add_argument("--out", required=True, help="output folder for comparison.md, figures and CSV tables")
    p.add_argument(
        "--budgets",
        help="comma-separated trial counts to compare hypervolume at "
        "(default: the grid's size and the longest study's)",
    )

    p = sub.add_parser(
        "export",
        help="export a trial's student: checkpoint, torch.export program, ONNX, model card",
    )
    _study_args(p)
    pick = p.add_mutually_exclusive_group(required=True)
    pick.add_argument("--trial", help="trial number, or best:<objective> (the front's best on that objective)")
    pick.add_argument("--knee", action="store_true", help="the knee of the Pareto front")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--format",
        default="checkpoint,pt2",
        help="comma-separated: checkpoint, pt2, onnx (default checkpoint,pt2)",
    )

    p = sub.add_parser(
        "downstream",
        help="OOD detection and uncertainty ranking: teacher vs front students "
        "vs a deterministic baseline (table + ROC / accuracy-rejection plots)",
    )
    _study_args(p)
    p.add_argument(
        "--trials",
        help="comma-separated trial numbers (default: up to 3 front trials, spread over the first objective)",
    )
    p.add_argument(
        "--ood",
        action="append",
        default=[],
        metavar="SET",
        help="OOD set: a dataset (fashion_mnist, mnist) or occlusion:<size>; repeatable "
        "(default: the study's data.ood and occlusion:<half the image side>)",
    )
    p.add_argument(
        "--baseline-steps",
        type=int,
        default=5000,
        help="Adam steps of the deterministic baseline (0 = no baseline)",
    )
    p.add_argument("--out", help="output folder (default reports/<name>/downstream/)")

    p = sub.add_parser("evaluate", help="evaluate one exported student: accuracy, calibration, OOD detection")
    p.add_argument("checkpoint", help="student checkpoint (.pt) written by export or distill")
    p.add_argument("--ood", help="OOD test set: fashion_mnist, mnist, or 'occlusion:<size>'")
    p.add_argument("--data-root", help="data root (default: $GPED_DATA_ROOT, then ../shared/data)")
    p.add_argument(
        "--teacher",
        help="the study's teacher artifact (teacher.pt): adds KL and ranking vs the teacher",
    )
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

    with pd.option_context(
        "display.max_columns",
        30,
        "display.width",
        200,
        "display.max_colwidth",
        40,
        "display.float_format",
        lambda v: f"{v:.4g}",
    ):
        print(df.to_string(index=False))


def cmd_distill(args) -> int:
    from gped_search.online import distill_online

    cfg = _load(args)
    import torch

    torch.set_num_threads(args.threads)
    rec = distill_online(cfg, progress=not args.no_progress, out_dir=args.out, restart=args.restart)
    s, t = rec["student"], rec["teacher"]
    print(
        json.dumps(
            {
                "teacher_acc": t["teacher_acc"],
                "teacher_nll": t["teacher_nll"],
                "kl": s["kl"],
                "student_acc": s["student_acc"],
                "params": s["params"],
                "outputs": rec["outputs"],
            },
            indent=2,
        )
    )
    return 0


def _report(cfg, study, out=None, compare=(), study_file: str | None = None, overrides=()) -> dict:
    from gped_search.config import load_study
    from gped_search.search import open_study, trials_frame
    from gped_search.search.jobs import export_command, write_study_report

    others = {}
    for path in compare:
        ocfg = load_study(path)
        others[ocfg.name] = trials_frame(open_study(ocfg, create=False))
    return write_study_report(cfg, study, out, others, export_command(study_file, overrides))


def cmd_run(args) -> int:
    from gped_search.search import run_study, storage_url, study_status

    cfg = _load(args)
    if args.batch is not None:
        cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, batch=args.batch))
    study = run_study(
        cfg,
        n_trials=args.n_trials,
        timeout=args.timeout,
        workers=args.workers,
        storage=args.storage,
        progress=not args.no_progress,
        threads=args.threads,
        restart=args.restart,
        announce=not args.json,
    )
    st = study_status(study, storage_url(cfg, args.storage, args.workers))
    report = (
        None
        if args.no_report
        else _report(cfg, study, study_file=args.study, overrides=args.overrides)["written"]["index_html"]
    )
    if args.json:
        print(json.dumps({**st, "report": report}, indent=2))
        return 0
    states = ", ".join(f"{n} {k.lower()}" for k, n in st["trials"].items()) or "no trials"
    print(f"study {st['study']}: {states}; {st['front_size']} on the Pareto front over " + ", ".join(st["objectives"]))
    if report:
        print(f"report: {report}")
        from gped_search.search.jobs import export_command

        print(f"export the recommended (knee) student: {export_command(args.study, args.overrides)}")
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
        print(
            "trials: " + ", ".join(f"{k.lower()} {v}" for k, v in st["trials"].items())
            if st["trials"]
            else "trials: none"
        )
        print(
            f"Pareto front: {st['front_size']} trials over "
            + ", ".join(f"{k} ({v})" for k, v in st["objectives"].items())
        )
        if st["teacher"]:
            print(
                "teacher: "
                + ", ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) and not v.is_integer() else f"{k} {v:g}"
                    for k, v in st["teacher"].items()
                )
            )
        if len(st.get("teachers_used", {})) > 1:
            print(
                "warning: trials were trained against different teachers (key@iterations: trials): "
                + ", ".join(f"{k}: {n}" for k, n in st["teachers_used"].items())
            )
    else:
        print(f"study {cfg.name}: no Optuna study yet (a `distill` run, or a teacher still being sampled)")
    for label, c in chains.items():
        print(_chain_line(label, c))
    return 0


def _metric_names() -> set[str]:
    from gped_search.search.space import METRICS

    return set(METRICS) | {"expected_entropy_mae", "expected_entropy_bias", "mi_bias"}


def _objectives_arg(text: str | None, study) -> dict[str, str]:
    from gped_search.config import ConfigError

    if not text:
        from gped_search.search.results import study_objectives

        return study_objectives(study)
    out = {}
    for part in text.split(","):
        name, _, d = part.strip().partition(":")
        d = {
            "": "minimize",
            "min": "minimize",
            "max": "maximize",
            "minimize": "minimize",
            "maximize": "maximize",
        }.get(d)
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
        import difflib

        valid = sorted(
            c
            for c in df.columns
            if c in _metric_names()
            or c.startswith("test_")
            and c[5:] in _metric_names()
            or c.endswith("_mae")
            or c.endswith("_bias")
        )
        close = difflib.get_close_matches(missing[0], valid, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"--objectives: no trial recorded {missing[0]!r} ({hint}valid: {', '.join(valid)})")
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
    print(
        f"wrote {res['written']['index_html']} and {res['written']['summary_md']} "
        f"({res['summary']['front_size']} trials on the front)"
    )
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


def cmd_export(args) -> int:
    from gped_search.search.jobs import export_trial

    cfg, study = _open(args)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    res = export_trial(cfg, study, args.out, trial=args.trial, knee=args.knee, formats=formats)
    keep = ("trial", "files", "verification", "dynamic_batch")
    print(json.dumps({k: v for k, v in res.items() if k in keep}, indent=2, default=str))
    return 0


def cmd_evaluate(args) -> int:
    from gped_search.checkpoints import load_checkpoint
    from gped_search.evaluation import evaluate_student

    model, meta = load_checkpoint(args.checkpoint)
    rec = evaluate_student(
        model,
        meta,
        ood=args.ood,
        data_root=args.data_root,
        teacher=args.teacher,
        where=args.checkpoint,
    )
    if args.json:
        print(json.dumps(rec, indent=2))
    else:
        for k, v in rec.items():
            print(f"{k:>28}  {v:.4f}" if isinstance(v, float) else f"{k:>28}  {v}")
    return 0


def cmd_downstream(args) -> int:
    from gped_search.search.jobs import run_downstream

    cfg, study = _open(args)
    table, out = run_downstream(
        cfg, study, trials=args.trials, oods=args.ood, baseline_steps=args.baseline_steps, out=args.out
    )
    _print_table(table)
    print(f"wrote {out}/downstream.csv, downstream.md and plots")
    return 0


COMMANDS = {
    "distill": cmd_distill,
    "run": cmd_run,
    "status": cmd_status,
    "pareto": cmd_pareto,
    "report": cmd_report,
    "downstream": cmd_downstream,
    "export": cmd_export,
    "evaluate": cmd_evaluate,
    "compare": cmd_compare,
}


def _user_errors() -> tuple[type[BaseException], ...]:
    from gped_search.errors import USER_ERRORS

    return USER_ERRORS


@contextlib.contextmanager
def _console_logging():
    """The library's log records (``gped_search.*``) on stderr as plain lines while a command runs."""
    import logging

    logger = logging.getLogger("gped_search")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate, propagate = False, logger.propagate
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
        logger.propagate = propagate


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    errors = _user_errors()
    try:
        with _console_logging():
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(
            "gped-search: interrupted; what the study recorded is kept (re-run the command to resume)",
            file=sys.stderr,
        )
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
