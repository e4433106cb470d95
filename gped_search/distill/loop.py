"""The online distillation loop (the paper's algorithm) and artifact-based student training.

:func:`run_teacher` runs the SGLD chain(s); after burn-in it accumulates the test-set posterior
expectations every ``thin`` iterations, keeps a bank of evenly spaced samples, and, when students
are given, takes one step of each student every ``H`` iterations from the live chain (``online`` or
``running_mean`` targets) -- several students in lockstep share one chain. :func:`train_student`
trains a student from a finished teacher (cached means or replay of the bank) without re-running
SGLD, which is what search trials do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from gped_search.config import DataConfig, DistillConfig, TargetMode, TeacherConfig
from gped_search.data import DataBundle, perturb
from gped_search.distill.student import LockstepTrainer, StudentTrainer
from gped_search.distill.targets import (
    BankTargets,
    CachedTargets,
    OnlineTargets,
    RunningMeanTargets,
)
from gped_search.metrics.quality import predictive_metrics
from gped_search.models import Arch, build
from gped_search.posterior.expectations import Expectation, PosteriorAccumulator
from gped_search.posterior.sgld import SGLD, DivergenceError

__all__ = ["TeacherResult", "run_teacher", "train_student", "train_students", "transfer_batch",
           "student_diverged"]


@dataclass
class TeacherResult:
    """What a teacher run leaves: posterior means on test/OOD/transfer inputs and a sample bank."""

    arch: Arch
    test: dict[str, torch.Tensor]
    ood: dict[str, torch.Tensor] | None
    transfer: dict[str, torch.Tensor] | None
    bank: dict[str, torch.Tensor]  # parameter name -> (S, *shape)
    metrics: dict[str, float]
    stats: dict[str, float] = field(default_factory=dict)


def transfer_batch(transfer: torch.Tensor, batch: int, data: DataConfig, gen: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """A transfer minibatch drawn with replacement and perturbed: (indices, inputs)."""
    idx = torch.randint(0, transfer.shape[0], (batch,), device=transfer.device, generator=gen)
    return idx, perturb(transfer[idx], data.perturb_sigma, data.clamp, gen)


def _check(sampler: SGLD, lock: LockstepTrainer | None, t: int) -> None:
    if not sampler.is_finite():
        raise DivergenceError(f"SGLD diverged (NaN/inf parameters) by iteration {t}; lower teacher.step_size")
    gone = lock.drop_diverged() if lock is not None else []
    if gone:
        raise DivergenceError(f"student {gone[0]} diverged (NaN/inf loss) by iteration {t}; lower distill.lr")


def run_teacher(tcfg: TeacherConfig, dcfg: DistillConfig, data_cfg: DataConfig, bundle: DataBundle,
                arch: Arch, exps: Sequence[Expectation], *, seed: int = 0,
                students: Sequence[StudentTrainer] = (), cache_transfer: bool = False,
                progress: bool = True, desc: str = "teacher") -> TeacherResult:
    """Run SGLD (and online distillation of ``students``); see the module docstring."""
    device = bundle.test.x.device
    sampler = SGLD(arch, bundle.train.x, bundle.train.y, step_size=tcfg.step_size,
                   prior_precision=tcfg.prior_precision, batch_size=tcfg.batch_size, chains=tcfg.chains,
                   schedule=tcfg.schedule, decay_t0=tcfg.decay_t0, decay_gamma=tcfg.decay_gamma, seed=seed)
    if tcfg.cuda_graph:
        sampler.capture_cuda_graph()
    n_classes = bundle.n_classes
    test_acc = PosteriorAccumulator(len(bundle.test), n_classes, exps, device)
    ood_acc = PosteriorAccumulator(len(bundle.ood), n_classes, exps, device) if bundle.ood is not None else None
    source = None
    lock = LockstepTrainer(students) if students else None  # students share the chain and one backward
    if students:
        source = OnlineTargets(sampler.logits, exps, dcfg.temperature)
        if dcfg.target_mode == TargetMode.running_mean:
            source = RunningMeanTargets(source, bundle.transfer.shape[0], n_classes, device)
    data_gen = torch.Generator(device=device).manual_seed(seed * 7919 + 11)
    post = tcfg.iterations - tcfg.burn_in
    bank_every = max(tcfg.thin, math.ceil(post * tcfg.chains / tcfg.bank_size))
    bank: list[list[torch.Tensor]] = []

    start = time.perf_counter()
    bar = tqdm(total=tcfg.iterations, desc=desc, disable=not progress, unit="it", mininterval=1.0)
    for t in range(1, tcfg.iterations + 1):
        sampler.step()
        after = t - tcfg.burn_in
        if after > 0 and after % tcfg.thin == 0:
            test_acc.update(sampler.logits(bundle.test.x))
            if ood_acc is not None:
                ood_acc.update(sampler.logits(bundle.ood.x))
        if after > 0 and after % bank_every == 0:
            bank.append(sampler.snapshot())
        if after > 0 and t % dcfg.every == 0 and students:
            idx, x = transfer_batch(bundle.transfer, dcfg.transfer_batch, data_cfg, data_gen)
            lock.step(x, source(idx, x))
        if t % tcfg.check_every == 0 or t == tcfg.iterations:
            _check(sampler, lock, t)  # the loop's only host syncs
            bar.update(t - bar.n)
            if students:
                bar.set_postfix(loss=f"{float(students[0].last_loss):.4f}", refresh=False)
    bar.close()
    seconds = time.perf_counter() - start
    if not bank:
        bank.append(sampler.snapshot())
    if test_acc.count == 0:  # fewer post-burn-in iterations than `thin`: use the final sample
        test_acc.update(sampler.logits(bundle.test.x))
        if ood_acc is not None:
            ood_acc.update(sampler.logits(bundle.ood.x))

    # Bank: (snapshots * chains, *shape), every chain's sample counted as one posterior sample.
    bank_t = {k: torch.cat([snap[i] for snap in bank]) for i, k in enumerate(sampler.names)}
    test = test_acc.means()
    transfer = _cached_means(sampler, bank_t, bundle.transfer, n_classes, exps) if cache_transfer else None
    metrics = predictive_metrics(test["predictive"], bundle.test.y, "teacher")
    stats = {"iterations": tcfg.iterations, "seconds": seconds, "ms_per_iteration": 1000 * seconds / tcfg.iterations,
             "test_samples": test_acc.count, "bank_samples": next(iter(bank_t.values())).shape[0],
             "chains": tcfg.chains, "student_steps": students[0].steps if students else 0}
    return TeacherResult(arch, test, ood_acc.means() if ood_acc is not None else None, transfer, bank_t,
                         metrics, stats)


@torch.no_grad()
def _cached_means(sampler: SGLD, bank: dict[str, torch.Tensor], x: torch.Tensor, n_classes: int,
                  exps: Sequence[Expectation]) -> dict[str, torch.Tensor]:
    """Posterior means of every expectation on the transfer inputs, over the bank's samples."""
    acc = PosteriorAccumulator(x.shape[0], n_classes, exps, x.device)
    params = [bank[k] for k in sampler.names]
    size = params[0].shape[0]
    for i in range(0, size, 8):
        acc.update(sampler.logits(x, params=[p[i:i + 8] for p in params]))
    return acc.means()


def student_diverged(step: int) -> DivergenceError:
    """The error of a student whose loss went non-finite by ``step`` (one wording for every caller)."""
    return DivergenceError(f"student diverged (NaN/inf loss) by step {step}; lower distill.lr")


def _artifact_targets(teacher: TeacherResult, dcfg: DistillConfig, exps: Sequence[Expectation],
                      gen: torch.Generator, device: torch.device):
    if dcfg.target_mode == TargetMode.cached and teacher.transfer is not None:
        return CachedTargets(teacher.transfer)
    return BankTargets(build(teacher.arch).to(device).eval(), teacher.bank, exps, gen, dcfg.temperature)


def train_students(trainers: Sequence[StudentTrainer], teacher: TeacherResult, transfer: torch.Tensor, steps: int,
                   dcfg: DistillConfig, data_cfg: DataConfig, *, seed: int = 0, check_every: int = 500,
                   progress: bool = False, desc: str = "students", leave: bool = True) -> dict:
    """Train students in lockstep from a finished teacher (the search's batch mode).

    Every step draws one transfer minibatch and computes the targets once (a cached-mean gather, or
    one forward of a bank sample for ``online`` replay) for all students, which then take one joint
    step (:class:`LockstepTrainer`). A student that diverges is dropped and reported in
    ``"diverged"`` (index -> step) while the others go on. The students must share ``exps``.
    """
    device = transfer.device
    gen = torch.Generator(device=device).manual_seed(seed * 7919 + 13)
    source = _artifact_targets(teacher, dcfg, trainers[0].exps, gen, device)
    lock = LockstepTrainer(trainers)
    diverged: dict[int, int] = {}
    start = time.perf_counter()
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress, unit="step", mininterval=1.0,
                     leave=leave):
        idx, x = transfer_batch(transfer, dcfg.transfer_batch, data_cfg, gen)
        lock.step(x, source(idx, x))
        if step % check_every == 0 or step == steps:
            diverged.update((i, step) for i in lock.drop_diverged())
            if not lock.active:
                break
    seconds = time.perf_counter() - start
    return {"steps": steps, "seconds": seconds, "steps_per_second": steps / max(seconds, 1e-9),
            "students": len(trainers), "diverged": diverged}


def train_student(trainer: StudentTrainer, teacher: TeacherResult, transfer: torch.Tensor, steps: int,
                  dcfg: DistillConfig, data_cfg: DataConfig, *, seed: int = 0, check_every: int = 500,
                  progress: bool = False, desc: str = "student") -> dict[str, float]:
    """Train from a finished teacher: ``cached`` means, else replay of the sample bank (``online``)."""
    out = train_students([trainer], teacher, transfer, steps, dcfg, data_cfg, seed=seed, check_every=check_every,
                         progress=progress, desc=desc)
    if out.pop("diverged"):
        raise student_diverged(trainer.steps)
    del out["students"]
    return out
