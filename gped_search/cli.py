"""``gped-search``: distil, search, inspect and export students from the command line.

Every user error (bad study file, missing data, corrupt artifact or checkpoint, diverging sampler,
unreachable storage) prints one line ``gped-search: error: ...`` and exits with status 2; what a
study has already recorded stays in its storage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys

from gped_search.cli_commands import (
    cmd_downstream,
    cmd_evaluate,
    cmd_export,
    cmd_robustness,
    load_args,
    open_args,
    print_table,
)
from gped_search.cli_parser import EXAMPLES, build_parser  # noqa: F401  (re-exported)

__all__ = ["main", "build_parser"]


def cmd_distill(args) -> int:
    from gped_search.engine.online import distill_online

    cfg = load_args(args)
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
    from gped_search.config import ConfigError

    for flag, value, ok in (
        ("--n-trials", args.n_trials, lambda v: v >= 1),
        ("--workers", args.workers, lambda v: v >= 1),
        ("--timeout", args.timeout, lambda v: v > 0),
    ):
        if value is not None and not ok(value):
            raise ConfigError(f"{flag} {value:g}: give a number {'> 0' if flag == '--timeout' else '>= 1'}")
    from gped_search.search import run_study, storage_url

    cfg = load_args(args)
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
    from gped_search.search.locations import storage_fingerprint
    from gped_search.search.status_cache import remember_status

    url = storage_url(cfg, args.storage, args.workers)
    fingerprint = storage_fingerprint(url)  # before reading: a later write is never hidden by this copy
    st = remember_status(url, cfg.name, fingerprint, study)  # the next `status` need not open Optuna
    written = {} if args.no_report else _report(cfg, study, study_file=args.study, overrides=args.overrides)
    report = written["written"]["index_html"] if written else None
    if args.json:
        print(json.dumps({**st, "report": report}, indent=2))
        return 0
    states = ", ".join(f"{n} {k.lower()}" for k, n in st["trials"].items()) or "no trials"
    print(f"study {st['study']}: {states}; {st['front_size']} on the Pareto front over " + ", ".join(st["objectives"]))
    if report:
        print(f"report: {report}")
        from gped_search.search.export_job import prepare_knee_export
        from gped_search.search.jobs import export_command

        prepare_knee_export(cfg, study)  # `export --knee` is then a copy of verified files
        print(f"export the recommended (knee) student: {export_command(args.study, args.overrides)}")
        warning = (written.get("summary", {}).get("recommended") or {}).get("warning")
        if warning:
            print(f"warning: {warning}")
    return 0


def _chains(cfg, url: str | None = None) -> dict:
    """Progress of the study's teacher chain and of a ``distill`` run's chain, where they exist (with
    ``search.artifacts``, the teacher chain's as the store and the lease in ``url``'s database say)."""
    from gped_search.posterior.chain_checkpoint import CHAIN_DIR, DISTILL_CHAIN_DIR, chain_status

    out = {}
    for label, folder in (("teacher chain", CHAIN_DIR), ("distill chain", DISTILL_CHAIN_DIR)):
        st = chain_status(cfg.out_dir / folder)
        if st is not None:
            out[label] = st
    if url and cfg.search.artifacts:  # the chain may run on another machine
        from gped_search.search.teacher_lease import store_chain_status

        st = store_chain_status(cfg, url)
        if st is not None:
            out["teacher chain"] = st
    return out


def _chain_line(label: str, st: dict) -> str:
    total = st["total"]
    line = f"{label}: {st['state']}, iteration {st['iteration']:,}" + (f" of {total:,}" if total else "")
    if st.get("rate_it_per_s"):
        line += f", {st['rate_it_per_s']:.1f} it/s"
    if st.get("seconds_left") and st["state"] != "done":
        left = st["seconds_left"]
        line += f", {left / 3600:.1f} h left" if left >= 3600 else f", {left / 60:.1f} min left"
    if st.get("holder") and st["state"] == "running":
        line += f" (sampled by {st['holder']})"
    if st["state"] == "paused":
        line += f" (resumes from the checkpoint at {st['checkpoint_iteration'] or 0:,} on the next run/distill)"
    return line


def cmd_status(args) -> int:
    from gped_search.errors import StudyError
    from gped_search.search.locations import storage_url
    from gped_search.search.status_cache import cached_study_status

    cfg = load_args(args)
    chains = _chains(cfg, storage_url(cfg, args.storage))
    try:
        st = cached_study_status(cfg, args.storage)
    except StudyError:
        if not chains:
            raise
        st = None  # a `distill` run, or a study whose teacher is still being sampled
    found = st is not None
    st = st if found else {"study": cfg.name}
    st["chains"] = chains
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    if found:
        print(f"study {st['study']}  ({st['storage']})")
        print(
            "trials: "
            + ", ".join(f"{'stopped early' if k == 'PRUNED' else k.lower()} {v}" for k, v in st["trials"].items())
            if st["trials"]
            else "trials: none"
        )
        print(
            f"Pareto front: {st['front_size']} trials over "
            + ", ".join(f"{k} ({v})" for k, v in st["objectives"].items())
        )
        if st.get("knee"):
            k = st["knee"]
            figs = ", ".join(
                f"{n} {v:.4g}" for n, v in k.items() if n not in ("trial", "arch") and isinstance(v, float)
            )
            print(f"knee (recommended): trial {k['trial']} ({k.get('arch') or '?'}): {figs}")
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
    from gped_search.config.metric_names import METRICS

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
        if name.startswith("test_"):
            raise ConfigError(
                f"--objectives {name}: a front chosen on the test set would select on test data; use "
                f"{name.removeprefix('test_')} (validation); the report and `pareto --csv` show every test_ figure"
            )
        out[name] = d
    return out


def cmd_pareto(args) -> int:
    if args.objectives:  # a malformed or test_ objective is refused before the study and pandas are loaded
        _objectives_arg(args.objectives, None)
    from gped_search.config import ConfigError
    from gped_search.report.recommend import front_columns
    from gped_search.report.tables import pareto_front
    from gped_search.search import trials_frame

    _, study = open_args(args)
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
    import textwrap

    from gped_search.report.recommend import selection_note

    print(textwrap.fill(selection_note(df[df["state"] == "COMPLETE"]), 120))
    from gped_search.report.tables import knee_point

    print(f"Pareto front over {', '.join(f'{k} ({v})' for k, v in objectives.items())}: {len(front)} trials")
    shown = front[front_columns(front, objectives)].copy()
    knee = knee_point(front, objectives)
    shown.insert(1, "knee", ["*" if i == knee else "" for i in front.index])
    print_table(shown)
    if args.csv:
        front.to_csv(args.csv, index=False)
    return 0


def cmd_report(args) -> int:
    from gped_search.search import open_study
    from gped_search.search.locations import storage_fingerprint, storage_url
    from gped_search.search.status_cache import remember_status

    cfg = load_args(args)
    url = storage_url(cfg, args.storage)
    fingerprint = storage_fingerprint(url)  # before reading: a later write is never hidden by the saved status
    study = open_study(cfg, args.storage, create=False)
    res = _report(cfg, study, args.out, args.compare, study_file=args.study, overrides=args.overrides)
    remember_status(url, cfg.name, fingerprint, study)
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
        print_table(summary)
    print(f"wrote {res['written']['comparison_md']} ({len(runs)} studies)")
    return 0


COMMANDS = {
    "distill": cmd_distill,
    "run": cmd_run,
    "status": cmd_status,
    "pareto": cmd_pareto,
    "report": cmd_report,
    "downstream": cmd_downstream,
    "robustness": cmd_robustness,
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
            rc = COMMANDS[args.command](args)
        sys.stdout.flush()  # inside the try: a reader that left shows here, not as a traceback at exit
        return rc
    except KeyboardInterrupt:
        print(
            "gped-search: interrupted; what the study recorded is kept (re-run the command to resume)",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:  # `gped-search pareto ... | head`: the reader left; say nothing, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's recipe: no error at exit
        return 141
    except errors as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, OSError) and e.filename:
            msg = f"{e.strerror or type(e).__name__}: {e.filename}"
        from gped_search.search.locations import mask_url

        print(f"gped-search: error: {mask_url(msg)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
