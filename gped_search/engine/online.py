"""The paper's online algorithm for one student (``gped-search distill``): the student learns from
the live SGLD chain; chain and student are checkpointed and resume after a stop."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gped_search.checkpoints import save_checkpoint
from gped_search.config import ConfigError, StudyConfig, TargetMode, chain_settings, settings_digest, to_dict
from gped_search.distill.loop import train_student
from gped_search.files import atomic_write_bytes, file_lock
from gped_search.models import build
from gped_search.posterior.chain_checkpoint import DISTILL_CHAIN_DIR

from .context import make_trainer, prepare, sample_teacher, student_arch_for, student_steps
from .pruning import prune_and_finetune
from .scoring import student_record

__all__ = ["distill_online", "distill_key", "DISTILL_CHAIN_DIR", "TRACE_FILE"]

TRACE_FILE = "teacher_test_loglik_trace.csv"
"""Beside ``distill.json``: per thinned sample and chain, the sample's mean test log-likelihood."""


def distill_key(cfg: StudyConfig) -> str:
    """Digest of every setting an online ``distill`` run depends on, except the chain's length."""
    d = chain_settings(cfg)
    for k in ("search", "report_dir", "device"):
        d.pop(k, None)
    return settings_digest(d)


def distill_online(
    cfg: StudyConfig,
    progress: bool = True,
    out_dir: str | Path | None = None,
    restart: bool = False,
) -> dict:
    """The paper's online algorithm for one student (``gped-search distill``); writes JSON + checkpoint.

    The student learns from the live chain every ``H`` iterations (``online`` or ``running_mean``
    targets; ``cached`` trains after the chain from its means on the transfer set). With
    ``prune.lambda_g > 0`` the penalty is on during the online phase, then the student is pruned and
    fine-tuned. The chain and the online student are checkpointed in ``<out>/distill.chain/``: a run
    that was stopped resumes there, and raising ``teacher.iterations`` after a finished run goes on
    from its final state (``restart`` discards the checkpoints).
    """
    online = cfg.distill.target_mode != TargetMode.cached
    if online and (cfg.distill.derivative_weight > 0 or cfg.distill.transfer_size):
        raise ConfigError(
            "distill.derivative_weight / distill.transfer_size: online distillation learns from the live chain; "
            "use distill.target_mode cached here, or `gped-search run` (students trained from the finished teacher)"
        )
    out = Path(out_dir) if out_dir else cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    p = prepare(cfg)
    torch.manual_seed(cfg.seed)
    model = build(student_arch_for(p, cfg.student)).to(p.device)
    trainer = make_trainer(model, p, cfg.distill, prune=cfg.prune)

    with file_lock(out / (DISTILL_CHAIN_DIR + ".lock")):  # one run per folder; the OS frees it if we die
        teacher = sample_teacher(
            p,
            (trainer,) if online else (),
            progress,
            cache_transfer=not online,
            checkpoint_dir=out / DISTILL_CHAIN_DIR,
            key=distill_key(cfg),
            restart=restart,
        )
    if not online:
        train_student(
            trainer,
            teacher,
            p.bundle.transfer,
            student_steps(cfg),
            cfg.distill,
            cfg.data,
            seed=cfg.seed,
            progress=progress,
        )
    pruning = None
    if cfg.prune.active:
        before = student_record(model, teacher, p)
        pruning = prune_and_finetune(model, teacher, p, cfg.prune, cfg.distill, cfg.seed, progress)
        pruning["before"] = {k: v for k, v in before.items() if k in ("kl", "student_acc", "params", "bytes_fp32")}
    rec = student_record(model, teacher, p, precision=cfg.student.precision.value)
    stats = dict(teacher.stats)
    trace, start = stats.pop("test_loglik_trace", []), stats.pop("test_loglik_trace_start", 0)
    record = {
        "study": cfg.name,
        "dataset": cfg.data.dataset.value,
        "device": str(p.device),
        "teacher": {**teacher.metrics, **stats, "arch": teacher.arch.describe()},
        "student": rec,
        "pruning": pruning,
        "config": to_dict(cfg),
    }
    (out / "distill.json").write_text(json.dumps(record, indent=2))
    save_checkpoint(
        out / "distill_student.pt",
        model,
        config=to_dict(cfg),
        metrics=rec,
        pruning=pruning and {k: v for k, v in pruning.items() if k != "history"},
    )
    # the teacher's test-set posterior predictive: independent runs' (seeds') can be compared (between-chain KL)
    torch.save(teacher.test["predictive"].cpu(), out / "teacher_test_predictive.pt")
    # each thinned sample's mean test log-likelihood per chain: split R-hat and ESS across runs
    rows = [f"{start + i},{c},{v}" for i, vals in enumerate(trace) for c, v in enumerate(vals)]
    atomic_write_bytes(out / TRACE_FILE, ("sample,chain,test_loglik\n" + "".join(r + "\n" for r in rows)).encode())
    record["outputs"] = [str(out / "distill.json"), str(out / "distill_student.pt")]
    return record
