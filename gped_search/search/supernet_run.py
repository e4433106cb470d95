"""``search.strategy: supernet`` in a study: distil one weight-sharing student per family, score the space's
architectures with inherited weights, and run only the chosen ones as ordinary trials that start from
their slice of the supernet.

Steps (each resumable: the supernets and the score table are kept in ``<report>/supernet/`` under a key
of everything they depend on, and chosen architectures that already have a trial are not run again):

1. :func:`supernets` — per student family, a supernet at the space's largest widths distilled with the
   sandwich rule (``search.supernet.steps``, ``random``).
2. :func:`score_table` — every architecture of the space (or ``samples`` of them) scored on the
   selection split with inherited weights, plus its exact cost (``scores.csv``).
3. :func:`choose` — the ``n_trials`` best by non-dominated sorting on the study's objectives (a front
   larger than the budget is thinned evenly along it).
4. The chosen are enqueued (their architecture fixed, every other parameter left to the sampler) and
   trained as trials: each student starts from its slice of the supernet and is distilled for
   ``finetune_steps``, then pruned and fine-tuned as any trial (records, checkpoints, export as usual).
5. With ``check: k``, k configurations not chosen are distilled alone at full length, and the Kendall tau
   between their inherited and stand-alone KL is recorded (``supernet_tau`` in the study).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd
import torch
from optuna.trial import TrialState

from gped_search.config import StudyConfig, to_dict
from gped_search.engine import Prepared, student_arch_for, student_steps
from gped_search.engine.batch import run_batch
from gped_search.engine.result import StudentFailure
from gped_search.metrics.interim import check_objectives, interim_scores
from gped_search.models import Arch, Net, build
from gped_search.posterior.result import TeacherResult
from gped_search.seeds import derive_seed, search_seed
from gped_search.supernet.slicing import add_depth_heads, extract, supernet_arch
from gped_search.supernet.space import ArchSpace
from gped_search.supernet.train import train_supernet

from .front import keep_best
from .space import Spec

__all__ = ["prepare_supernet", "supernets", "score_table", "choose", "finetune_steps", "kendall_check"]

log = logging.getLogger(__name__)


def finetune_steps(cfg: StudyConfig) -> int:
    """Distillation steps of an extracted student (``search.supernet.finetune_steps``, else a fifth)."""
    n = cfg.search.supernet.finetune_steps
    return max(1, student_steps(cfg) // 5) if n is None else n


def _key(cfg: StudyConfig, teacher: TeacherResult, what: str, extra) -> str:
    d = to_dict(cfg)
    sc = dict(d["search"]["supernet"])
    for k in ("finetune_steps", "check"):  # not what the supernet or its scores depend on
        sc.pop(k, None)
    blob = {
        "what": what,
        "teacher": str(teacher.stats.get("teacher_key", "")),
        "teacher_iterations": int(teacher.stats.get("iterations", 0)),
        "data": d["data"],
        "distill": d["distill"],
        "seed": search_seed(cfg),
        "supernet": sc,
        "extra": extra,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _families(space: ArchSpace, configs: list[dict], p: Prepared) -> dict[str, list[Arch]]:
    """The architectures of ``configs``, by student family (one supernet each)."""
    out: dict[str, list[Arch]] = {}
    for params in configs:
        st = space.student(params)
        out.setdefault(st.family.value, []).append(student_arch_for(p, st))
    return out


def supernets(
    p: Prepared, teacher: TeacherResult, space: ArchSpace, configs: list[dict], folder: Path, progress: bool
) -> tuple[dict[str, Net], dict]:
    """Per family, its supernet: loaded from ``folder/<family>.pt`` when its key matches, else distilled."""
    cfg = p.cfg
    sc = cfg.search.supernet
    steps = sc.steps or student_steps(cfg)
    nets, info = {}, {}
    for fam, archs in _families(space, configs, p).items():
        sup = supernet_arch(archs)
        small = student_arch_for(p, space.student(space.extremes(fam)[0]))
        key = _key(cfg, teacher, "supernet", [fam, sup.to_dict(), [a.to_dict() for a in archs], "depth heads"])
        path = folder / f"{fam}.pt"
        if path.exists():
            saved = torch.load(path, map_location=p.device, weights_only=True)
            if saved.get("key") == key:
                net = add_depth_heads(build(Arch.from_dict(saved["arch"])).to(p.device), saved.get("depths", ()))
                net.load_state_dict(saved["state"])
                nets[fam], info[fam] = net, dict(saved["record"], loaded=True)
                continue
        seed = derive_seed(search_seed(cfg), "supernet")
        net, rec = train_supernet(
            p, teacher, sup, archs, small, steps=steps, random=sc.random, seed=seed, progress=progress
        )
        rec = {"arch": sup.describe(), "seconds": rec["seconds"], "steps": steps, "curve": rec["curve"]}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        depths = sorted({len(a.hidden) for a in archs})
        torch.save({"key": key, "arch": sup.to_dict(), "depths": depths, "state": net.state_dict(), "record": rec}, tmp)
        os.replace(tmp, path)
        nets[fam], info[fam] = net, dict(rec, loaded=False)
    return nets, info


def score_table(
    p: Prepared, teacher: TeacherResult, space: ArchSpace, configs: list[dict], nets: dict[str, Net], folder: Path
) -> pd.DataFrame:
    """One row per architecture: its parameters (``config``, as JSON), family, arch and inherited scores;
    kept in ``folder/scores.csv`` (reused when its key matches)."""
    key = _key(p.cfg, teacher, "scores", [configs, {f: n.arch.to_dict() for f, n in nets.items()}])
    path = folder / "scores.csv"
    if path.exists():
        old = pd.read_csv(path)
        if len(old) and (old["key"] == key).all():
            return old
    rows, t0 = [], time.perf_counter()
    cache: dict[Arch, dict] = {}
    for params in configs:
        st = space.student(params)
        arch = student_arch_for(p, st)
        if arch not in cache:
            cache[arch] = interim_scores(p, teacher, extract(nets[st.family.value], arch))
        rows.append(
            {
                "key": key,
                "config": json.dumps(params, sort_keys=True),
                "family": st.family.value,
                "arch": arch.describe(),
                **cache[arch],
            }
        )
    df = pd.DataFrame(rows)
    df["score_seconds"] = time.perf_counter() - t0
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(path.with_suffix(".tmp"), index=False)
    os.replace(path.with_suffix(".tmp"), path)
    return df


def _feasible(df: pd.DataFrame, cfg: StudyConfig) -> pd.Series:
    ok = pd.Series(True, index=df.index)
    for k, bound in cfg.search.constraints.items():
        if k in df.columns:  # a constraint the scores do not hold is checked on the trial
            ok &= df[k] <= bound
    return ok


def choose(df: pd.DataFrame, cfg: StudyConfig, budget: int) -> pd.DataFrame:
    """The ``budget`` best rows by non-dominated sorting on the study's objectives (feasible first)."""
    names = list(cfg.search.objectives)
    dirs = [cfg.search.objectives[n] for n in names]
    ok = _feasible(df, cfg)
    pool = df[ok] if ok.any() else df
    picked = keep_best(pool[names].to_numpy(float), dirs, budget, ties=False)
    out = pool.iloc[picked].copy()
    out["pick"] = range(len(out))
    return out


def kendall_check(
    p: Prepared, teacher: TeacherResult, space: ArchSpace, df: pd.DataFrame, chosen: pd.DataFrame, k: int
) -> dict:
    """``k`` configurations not chosen, distilled alone at full length in lockstep: their selection-split KL
    against the inherited KL (Kendall tau), and the seconds it took."""
    rest = df[~df["config"].isin(chosen["config"])].drop_duplicates("arch")
    rng = random.Random(derive_seed(search_seed(p.cfg), "supernet-check"))
    rows = rest.iloc[sorted(rng.sample(range(len(rest)), min(k, len(rest))))]
    configs = [replace(p.cfg, student=space.student(json.loads(s))) for s in rows["config"]]
    seeds = [derive_seed(search_seed(p.cfg), "supernet-check", i) for i in range(len(configs))]
    t0 = time.perf_counter()
    res = run_batch(p, teacher, configs, seeds, data_seed=seeds[0], steps=student_steps(p.cfg))
    seconds = time.perf_counter() - t0
    alone = [float("nan") if isinstance(r, StudentFailure) else float(r.metrics["kl"]) for r in res]
    pairs = pd.DataFrame({"inherited": rows["kl"].to_numpy(float), "alone": alone}).dropna()
    tau = float(pairs["inherited"].corr(pairs["alone"], method="kendall")) if len(pairs) >= 3 else float("nan")
    return {
        "tau": tau,
        "n": int(len(pairs)),
        "seconds": seconds,
        "rows": [
            {"arch": a, "inherited_kl": float(i), "alone_kl": float(s)}
            for a, i, s in zip(rows["arch"], rows["kl"], alone)
        ],
    }


def prepare_supernet(
    study: optuna.Study,
    p: Prepared,
    teacher: TeacherResult,
    artifact_dir: Path,
    specs: dict[str, Spec],
    budget: int,
    progress: bool = False,
) -> dict[str, Net]:
    """Steps 1-3 and 5 of the module's list, and the chosen architectures enqueued (those without a trial
    yet); returns the supernets, from which the trials' students start."""
    cfg = p.cfg
    check_objectives(list(cfg.search.objectives), "supernet")
    space = ArchSpace(cfg, specs)
    configs = space.configurations(cfg.search.supernet.samples, derive_seed(search_seed(cfg), "supernet-space"))
    folder = artifact_dir / "supernet"
    nets, info = supernets(p, teacher, space, configs, folder, progress)
    df = score_table(p, teacher, space, configs, nets, folder)
    chosen = choose(df, cfg, budget)
    attrs = {
        "families": {f: {k: v for k, v in r.items() if k != "curve"} for f, r in info.items()},
        "seconds": sum(r["seconds"] for r in info.values()),
        "score_seconds": float(df["score_seconds"].iloc[0]) if len(df) else 0.0,
        "configurations": len(df),
        "architectures": int(df["arch"].nunique()),
        "chosen": len(chosen),
        "finetune_steps": finetune_steps(cfg),
    }
    study.set_user_attr("supernet", attrs)
    k = cfg.search.supernet.check
    if k and "supernet_tau" not in study.user_attrs:
        chk = kendall_check(p, teacher, space, df, chosen, k)
        study.set_user_attr("supernet_tau", chk["tau"])
        study.set_user_attr("supernet_check", chk)
        log.info("supernet: Kendall tau %.3f over %d configurations trained alone", chk["tau"], chk["n"])
    have = {
        t.user_attrs.get("supernet_pick")
        for t in study.get_trials(deepcopy=False)
        if not (t.state == TrialState.FAIL and t.user_attrs.get("interrupted"))
    }
    for _, row in chosen.iterrows():
        if int(row["pick"]) in have:
            continue
        study.enqueue_trial(
            json.loads(row["config"]),
            user_attrs={"supernet_pick": int(row["pick"]), "supernet_kl": float(row["kl"]), "origin": "supernet"},
            skip_if_exists=False,
        )
    return nets


def extracted(nets: dict[str, Net], p: Prepared, tc: StudyConfig) -> Net:
    """A trial's student as its slice of its family's supernet (a copy: the supernet stays as it is)."""
    return extract(nets[tc.student.family.value], student_arch_for(p, tc.student))
