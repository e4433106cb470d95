"""The ``gped-search`` command line's arguments: every command, flag and help text (no logic)."""

from __future__ import annotations

import argparse

__all__ = ["EXAMPLES", "build_parser"]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("gped-search")
    except ImportError:  # importlib.metadata.PackageNotFoundError: run from a source tree, not installed
        return "unknown"


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
  gped-search evaluate exported/student.pt --ood occlusion:4   # --ood fashion_mnist: 28x28 students only
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
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--trial", help="trial number, or best:<objective> (the front's best on that objective)")
    pick.add_argument("--knee", action="store_true", help="the knee of the Pareto front")
    p.add_argument(
        "--best-under",
        metavar="SIZE",
        help="only trials whose fp32 size is at most SIZE (500kB, 1.5MB, bytes); without --trial/--knee: "
        "the best of them on the study's first objective (validation figures)",
    )
    p.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="METRIC>=X",
        help="only trials whose validation METRIC meets the bound, e.g. acc>=0.95 or kl<=0.05 (repeatable; "
        "combines with --best-under, --knee, --trial best:<objective>)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--format",
        default="checkpoint,pt2",
        help="comma-separated: checkpoint, pt2, onnx, onnx-int8 (default checkpoint,pt2; an int8 trial adds "
        "onnx-int8: pip install gped-search[onnx]); files of an earlier export "
        "in --out that this one does not write (student.onnx, ...) are removed",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="write and verify every file again, even when the study folder keeps a current export of this "
        "student (`run` exports the knee ahead; any export is kept: a later one of the same checkpoint, "
        "metrics, formats, code and torch is a copy)",
    )
    p.add_argument("--json", action="store_true", help="print the files, checks and removed files as JSON")

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
        help="OOD set: a dataset whose images have the study's shape (fashion_mnist, mnist: 28x28) or "
        "occlusion:<size> (1 to the image side - 1 pixels); repeatable "
        "(default: the study's data.ood and occlusion:<half the image side>)",
    )
    p.add_argument(
        "--baseline-steps",
        type=int,
        default=5000,
        help="Adam steps of the deterministic baseline (0 = no baseline)",
    )
    p.add_argument("--out", help="output folder (default reports/<name>/downstream/)")

    p = sub.add_parser(
        "robustness",
        help="adversarial robustness: accuracy, entropy and MI under FGSM / PGD of the teacher, "
        "front students and a deterministic baseline (table + plot)",
    )
    _study_args(p)
    p.add_argument(
        "--trials",
        help="comma-separated trial numbers (default: up to 3 front trials, spread over the first objective)",
    )
    p.add_argument("--eps", default="0.05,0.1,0.2", help="comma-separated L-infinity radii on [0, 1] pixels")
    p.add_argument("--attacks", default="fgsm,pgd", help="comma-separated: fgsm, pgd (default both)")
    p.add_argument("--pgd-steps", type=int, default=10, help="PGD steps (step size 2.5 eps / steps)")
    p.add_argument("--n", type=int, default=1000, help="test images attacked (the first n; default 1000)")
    p.add_argument(
        "--baseline-steps",
        type=int,
        default=5000,
        help="Adam steps of the deterministic baseline (0 = no baseline)",
    )
    p.add_argument(
        "--seed", type=int, help="seed of the baseline and PGD's random starts (default: search.seed, else seed)"
    )
    p.add_argument("--out", help="output folder (default reports/<name>/robustness/)")

    p = sub.add_parser("evaluate", help="evaluate one exported student: accuracy, calibration, OOD detection")
    p.add_argument(
        "checkpoint", help="student checkpoint (.pt) written by export or distill, or a store address (s3://...)"
    )
    p.add_argument(
        "--ood",
        help="OOD test set: fashion_mnist or mnist (28x28 students), or 'occlusion:<size>' "
        "(1 to the image side - 1 pixels)",
    )
    p.add_argument("--data-root", help="data root (default: $GPED_DATA_ROOT, then ../shared/data)")
    p.add_argument(
        "--teacher",
        help="the study's teacher artifact (teacher.pt, or its store address s3://bucket/prefix/STUDY/teacher.pt): "
        "adds KL and ranking vs the teacher",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    return ap
