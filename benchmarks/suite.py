"""Run a folder of study files once per search seed, resumably (the headline and prune-peer comparisons).

Every study file ``studies/<suite>/<setting>_<kind>.yaml`` runs once per search seed as the Optuna
study ``<prefix>_<setting>_<kind>_s<seed>`` in the suite's report folder (one SQLite file per study).
Re-running resumes: a study that already has its trials is skipped, a teacher chain that was stopped
resumes from its checkpoint, and every study of one setting reuses that setting's teacher artifact.
Each study runs in its own ``gped-search run`` process with ``--threads`` torch threads.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Suite:
    studies: Path  # folder of study files
    reports: Path  # report folder of every study
    prefix: str  # study name = f"{prefix}_{file stem}_s{seed}"
    order: tuple[str, ...]  # kinds in run order (the part of the stem after the setting)
    last: tuple[str, ...] = ()  # kinds run after everything else of their setting
    teacher_source: Path | None = None  # a report folder whose teacher artifacts are linked in, not re-sampled
    relocate: bool = False  # run the studies in ``reports`` (``--set report_dir``), not the study files' own folder
    interleave: bool = False  # seed by seed, every study of a seed before the next seed (equal load for all)

    def overrides(self, f: Path, seed: int) -> list[str]:
        """The ``--set`` values of one run: its name, and with ``relocate`` the suite's report folder."""
        out = [f"name={self.name(f, seed)}"]
        return out + [f"report_dir={self.reports}"] if self.relocate else out

    def link_teacher(self, f: Path, seed: int) -> None:
        """Hard-link a teacher artifact of the same key and length from ``teachers`` into the study folder."""
        from gped_search.config import load_study
        from gped_search.search.teacher import TEACHER_FILE, find_teacher, teacher_stamp

        if self.teacher_source is None:
            return
        cfg = load_study(f, self.overrides(f, seed))
        out = cfg.out_dir.resolve()
        if (out / TEACHER_FILE).exists():
            return
        stamp = teacher_stamp(cfg)
        src = find_teacher(self.teacher_source, stamp)
        if src is not None:
            out.mkdir(parents=True, exist_ok=True)
            for suffix in (".sha256", ".key", ""):  # the artifact last: never one without its checksum
                os.link(src.with_name(TEACHER_FILE + suffix), out / (TEACHER_FILE + suffix))
            return
        print(f"{f.stem}: no teacher with key {stamp} in {self.teacher_source}; the study samples its own", flush=True)

    def split(self, f: Path) -> tuple[str, str]:
        """(setting, kind) of a study file: the kind is the longest known suffix."""
        for kind in sorted(self.order, key=len, reverse=True):
            if f.stem.endswith("_" + kind):
                return f.stem[: -len(kind) - 1], kind
        raise ValueError(f"{f}: kind not one of {self.order}")

    def files(self, only: list[str] | None) -> list[Path]:
        files = sorted(
            (f for f in self.studies.glob("*.yaml") if not f.name.startswith("_")),  # _*.yaml: bases
            key=lambda f: (
                self.split(f)[0].startswith("cnn"),
                self.split(f)[0],
                self.order.index(self.split(f)[1]),
            ),
        )
        if only:
            files = [f for f in files if any(f.stem.startswith(o) for o in only)]
        return files

    def name(self, f: Path, seed: int) -> str:
        return f"{self.prefix}_{f.stem}_s{seed}"

    def done(self, name: str) -> int:
        db = self.reports / name / "study.db"
        if not db.is_file():
            return 0
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            s = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
        except KeyError:
            return 0
        # a halving study's students stopped at a rung are PRUNED: they count as asked and answered
        return sum(t.state.name in ("COMPLETE", "PRUNED") for t in s.get_trials(deepcopy=False))

    def trials(self):
        """Every COMPLETE trial of every study of the suite, with ``setting``, ``kind`` and ``seed``."""
        import optuna
        import pandas as pd

        from gped_search.search.results import trials_frame

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        frames = []
        for f in self.files(None):
            setting, kind = self.split(f)
            for seed in SEEDS:
                name = self.name(f, seed)
                db = self.reports / name / "study.db"
                if not db.is_file():
                    continue
                df = trials_frame(optuna.load_study(study_name=name, storage=f"sqlite:///{db}"))
                df = df[df["state"] == "COMPLETE"].copy()
                df["setting"], df["kind"], df["seed"] = setting, kind, seed
                frames.append(df)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _rank(self, f: Path, only: list[str] | None) -> tuple:
        setting, kind = self.split(f)
        first = next((i for i, o in enumerate(only or []) if f.stem.startswith(o)), 0)
        return (first, setting, kind in self.last)

    def teachers(self, args) -> int:
        import torch

        from gped_search.config import load_study
        from gped_search.engine import prepare
        from gped_search.search.teacher import ensure_teacher

        torch.set_num_threads(args.threads)
        seen = set()
        for f in self.files(args.only):
            setting = self.split(f)[0]
            if setting in seen:
                continue
            seen.add(setting)
            cfg = load_study(f, [f"name={self.name(f, 0)}"])
            self.link_teacher(f, 0)
            t0 = time.time()
            teacher, info = ensure_teacher(prepare(cfg), cfg.out_dir.resolve(), progress=not args.no_progress)
            print(
                f"{setting}: teacher {info['teacher_iterations']} iterations, test acc "
                f"{teacher.metrics.get('teacher_acc', float('nan')):.4f}, "
                f"{time.time() - t0:.0f} s here ({'sampled' if info['teacher_sampled_here'] else 'loaded'})",
                flush=True,
            )
        return 0

    def schedule(self, only: list[str] | None, seeds) -> list[tuple[Path, int]]:
        """(study file, seed) in run order: setting by setting, within a setting seed by seed (so that
        a stopped run has whole seeds); with ``interleave``, seed by seed, every file of a seed first."""
        plan = [(f, seed) for f in self.files(only) for seed in seeds]
        if self.interleave:
            return sorted(plan, key=lambda fs: (fs[1], self._rank(fs[0], only)))
        return sorted(plan, key=lambda fs: (self._rank(fs[0], only), fs[1]))

    def run(self, args) -> int:
        from gped_search.config import load_study

        exe = Path(sys.executable).with_name("gped-search")
        rc = 0
        sets = args.set or []
        for f, seed in self.schedule(args.only, args.seeds):
            want = load_study(f, sets).search.n_trials
            name = self.name(f, seed)
            if self.done(name) >= want:
                print(f"{name}: done ({want} trials)", flush=True)
                continue
            self.link_teacher(f, seed)
            cmd = [str(exe), "run", str(f), *(a for o in self.overrides(f, seed) for a in ("--set", o))]
            cmd += ["--set", f"search.seed={seed}", *(a for o in sets for a in ("--set", o))]
            cmd += ["--threads", str(args.threads), "--no-report", "--no-progress"]
            print(f"{time.strftime('%H:%M:%S')} {name}: " + " ".join(cmd[1:]), flush=True)
            t0 = time.time()
            r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            print(f"{time.strftime('%H:%M:%S')} {name}: exit {r.returncode} after {time.time() - t0:.0f} s", flush=True)
            rc = rc or r.returncode
        return rc

    def plan(self, args) -> int:
        from gped_search.config import load_study

        for f in self.files(args.only):
            want = load_study(f, args.set or []).search.n_trials
            for seed in args.seeds:
                name = self.name(f, seed)
                print(f"{name:44s} {self.done(name):3d}/{want}")
        return 0


def parser(description: str, commands: tuple[str, ...]) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in commands:
        sp = sub.add_parser(name)
        sp.add_argument("--only", nargs="*", help="study-file name prefixes, e.g. mlp_mask0 cnn")
        sp.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
        sp.add_argument("--threads", type=int, default=1)
        sp.add_argument("--no-progress", action="store_true")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="a study override for every run")
    return ap
