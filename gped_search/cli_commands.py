"""The commands that read a finished study or an exported student (``export``, ``evaluate``, ``downstream``,
``robustness``) and the helpers every command shares; :mod:`gped_search.cli` dispatches to them."""

from __future__ import annotations

import json


def load_args(args):
    from gped_search.config import load_study

    cfg = load_study(args.study, args.overrides)
    if cfg.distill.plugins:  # found beside the study file or in the current folder; one line if not, before any work
        from pathlib import Path

        from gped_search.posterior.expectations import import_plugins

        import_plugins(cfg.distill.plugins, (Path(args.study).resolve().parent, Path.cwd()))
    if cfg.search.artifacts:  # a wrong bucket, no credentials, an unreachable endpoint: one line, before any work
        from gped_search.store import check_store

        check_store(cfg)
    return cfg


def print_table(df) -> None:
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
        import shutil

        width = min(120, shutil.get_terminal_size((120, 24)).columns)  # wide tables wrap into blocks
        print(df.to_string(index=False, line_width=width))


def open_args(args):
    from gped_search.search import open_study

    cfg = load_args(args)
    return cfg, open_study(cfg, args.storage, create=False)


def export_formats() -> tuple[str, ...] | None:
    """``exporting.FORMATS`` read from the module's source, so a wrong ``--format`` is refused without
    importing torch (a test keeps the two equal); None when it cannot be read (then export checks)."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec("gped_search.exporting")
        tree = ast.parse(open(spec.origin, encoding="utf-8").read())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FORMATS" for t in node.targets):
                return tuple(ast.literal_eval(node.value))
    except (OSError, ValueError, SyntaxError, AttributeError, TypeError):
        pass
    return None


def cmd_export(args) -> int:
    from gped_search.config import ConfigError
    from gped_search.search.selection import parse_requirement, parse_size

    best_under = parse_size(args.best_under) if args.best_under is not None else None
    require = tuple(parse_requirement(r) for r in args.require)
    if args.trial is None and not args.knee and best_under is None and not require:
        raise ConfigError("export: say which student: --trial N|best:<objective>, --knee, --best-under or --require")
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    known = export_formats()
    bad = [f for f in formats if known is not None and f not in known]
    if bad or not formats:
        raise ConfigError(f"--format: unknown {bad or '(none given)'}; valid: {', '.join(known or ())}")
    cfg = load_args(args)
    numbered = args.trial is not None and not args.trial.startswith("best:")
    if numbered:
        from gped_search.search.selection import check_trial_number
        from gped_search.search.status_cache import saved_trials

        # a wrong number is refused before Optuna opens, when the study's saved status is current
        check_trial_number(None, args.trial, saved_trials(cfg, args.storage))
    from gped_search.search import open_study  # imports Optuna: after the checks that need none

    study = open_study(cfg, args.storage, create=False)
    if numbered:
        check_trial_number(study, args.trial)  # before pandas and torch are imported
    from gped_search.search.export_job import export_trial

    res = export_trial(
        cfg,
        study,
        args.out,
        trial=args.trial,
        knee=args.knee,
        formats=formats,
        best_under=best_under,
        require=require,
        fresh=args.fresh,
    )
    if args.json:
        keep = (
            "trial",
            "files",
            "verification",
            "dynamic_batch",
            "removed_stale",
            "warning",
            "quantization",
            "from_cache",
        )
        print(json.dumps({k: v for k, v in res.items() if k in keep}, indent=2, default=str))
        return 0
    from pathlib import Path

    print(f"exported trial {res['trial']} to {res['out_dir']}:")
    for path in res["files"].values():
        print(f"  {Path(path).name:<24} {Path(path).stat().st_size / 1000:>9.1f} kB")
    diffs = ", ".join(f"{k} {v:.2g}" if v is not None else f"{k} not checked" for k, v in res["verification"].items())
    print(f"verified: every model file reloads to the stored student's outputs (largest difference: {diffs})")
    if res.get("from_cache"):
        print(
            f"  (copied from the export kept in the study folder, written and verified {res['verified_utc']} "
            "from the same checkpoint, settings, code and torch)"
        )
    q = res.get("quantization")
    if q:
        dev = max(q["max_abs_deviation_from_fp32"].values())
        acc = f"; int8 test accuracy {q['test_student_acc']:.4f}" if "test_student_acc" in q else ""
        print(
            f"int8 ({q['mode']}): at most {dev:.3g} from the fp32 student's outputs on {q['deviation_measured_on']}{acc}"
        )
    if res.get("warning"):
        print(f"warning: {res['warning']}")
    if res.get("removed_stale"):
        print("removed the files of an earlier export this one did not write: " + ", ".join(res["removed_stale"]))
    return 0


def cmd_evaluate(args) -> int:
    from pathlib import Path

    from gped_search.errors import CheckpointError

    # a store's object (s3://bucket/prefix/<study>/teacher.pt) is fetched into a local cache and verified
    for attr in ("checkpoint", "teacher"):
        url = getattr(args, attr, None)
        if isinstance(url, str) and url.startswith(("s3://", "file://")):
            from gped_search.store.files import fetch_url

            setattr(args, attr, str(fetch_url(url)))
    if not Path(args.checkpoint).is_file():  # before torch is imported: the error comes at once
        raise CheckpointError(f"{args.checkpoint}: no such checkpoint file")
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
    if args.baseline_steps < 0:
        from gped_search.config import ConfigError

        raise ConfigError(f"--baseline-steps {args.baseline_steps}: give 0 (no baseline) or more Adam steps")
    from gped_search.search.uncertainty_jobs import run_downstream

    cfg, study = open_args(args)
    table, out = run_downstream(
        cfg, study, trials=args.trials, oods=args.ood, baseline_steps=args.baseline_steps, out=args.out
    )
    _publish(cfg, out)
    print_table(table)
    print(f"wrote {out}/downstream.csv, downstream.md and plots")
    return 0


def _publish(cfg, folder) -> None:
    """With ``search.artifacts``: results written into the report folder go to the store too (reports elsewhere)."""
    if cfg.search.artifacts:
        from gped_search.store.files import publish_study_folder

        publish_study_folder(cfg, folder)


def _floats(text: str, flag: str) -> tuple[float, ...]:
    from gped_search.config import ConfigError

    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a comma-separated list of numbers") from None
    if not values:
        raise ConfigError(f"{flag}: give at least one number")
    return values


def cmd_robustness(args) -> int:
    from gped_search.config import ConfigError
    from gped_search.metrics.adversarial import ATTACKS
    from gped_search.search.uncertainty_jobs import run_robustness

    eps = _floats(args.eps, "--eps")
    if any(not 0 < e <= 1 for e in eps):
        raise ConfigError(f"--eps: every radius must be in (0, 1] (pixels in [0, 1]), got {args.eps}")
    attacks = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    bad = [a for a in attacks if a not in ATTACKS]
    if bad or not attacks:
        raise ConfigError(f"--attacks: unknown {', '.join(bad) or '(none given)'}; valid: {', '.join(ATTACKS)}")
    if args.baseline_steps < 0:
        raise ConfigError(f"--baseline-steps {args.baseline_steps}: give 0 (no baseline) or more Adam steps")
    if args.n < 1 or args.pgd_steps < 1:
        raise ConfigError("--n and --pgd-steps must be >= 1")
    cfg, study = open_args(args)
    table, out = run_robustness(
        cfg,
        study,
        trials=args.trials,
        eps=eps,
        attacks=attacks,
        pgd_steps=args.pgd_steps,
        n=args.n,
        baseline_steps=args.baseline_steps,
        out=args.out,
        seed=args.seed,
    )
    _publish(cfg, out)
    print_table(table)
    print(f"wrote {out}/robustness.csv, robustness.md and robustness.png")
    return 0
