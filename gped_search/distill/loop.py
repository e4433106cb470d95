"""The online distillation loop (the paper's algorithm) and artifact-based student training.

:func:`run_teacher` runs the SGLD chain(s); after burn-in it accumulates the test-set posterior
expectations every ``thin`` iterations, keeps a bank of evenly spaced samples, and, when students
are given, takes one step of each student every ``H`` iterations from the live chain (``online`` or
``running_mean`` targets) -- several students in lockstep share one chain. :func:`train_student`
trains a student from a finished teacher (cached means or replay of the bank) without re-running
SGLD, which is what search trials do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gped_search.config import DataConfig, DistillConfig, TargetMode, TeacherConfig
from gped_search.data import DataBundle
from gped_search.distill.auxiliary import random_directions, teacher_predictive_jvp
from gped_search.distill.chain import TeacherChain, transfer_batch
from gped_search.distill.student import LockstepTrainer, StudentTrainer
from gped_search.distill.targets import BankTargets, CachedTargets, RunningMeanTargets
from gped_search.models import Arch, build
from gped_search.posterior.chain_checkpoint import (
    ChainCheckpointError,
    clear_checkpoints,
    latest_checkpoint,
    save_checkpoint_generation,
    write_progress,
)
from gped_search.posterior.expectations import Expectation
from gped_search.posterior.result import TeacherResult
from gped_search.posterior.sgld import DivergenceError
from gped_search.seeds import derive_seed

log = logging.getLogger(__name__)

__all__ = [
    "TeacherResult",
    "run_teacher",
    "train_student",
    "train_students",
    "LockstepRun",
    "transfer_batch",
    "student_diverged",
    "accumulate_gradients",
]


def run_teacher(
    tcfg: TeacherConfig,
    dcfg: DistillConfig,
    data_cfg: DataConfig,
    bundle: DataBundle,
    arch: Arch,
    exps: Sequence[Expectation],
    *,
    seed: int = 0,
    students: Sequence[StudentTrainer] = (),
    cache_transfer: bool = False,
    progress: bool = True,
    desc: str = "teacher",
    checkpoint_dir: str | Path | None = None,
    checkpoint_key: str = "",
    restart: bool = False,
) -> TeacherResult:
    """Run SGLD (and online distillation of ``students``) to ``tcfg.iterations``; see the module docstring.

    With ``checkpoint_dir`` the chain is checkpointed there (every ``tcfg.checkpoint_every``
    iterations, or every ``tcfg.checkpoint_seconds`` of work) and resumed from its newest checkpoint
    whose key is ``checkpoint_key``; a chain that stopped short (killed, or finished at a smaller
    total) is continued, one that already went further than ``tcfg.iterations`` is an error.
    ``restart`` discards the checkpoints first. The final state is always kept (for extension).
    """
    chain = TeacherChain(
        tcfg,
        dcfg,
        data_cfg,
        bundle,
        arch,
        exps,
        seed=seed,
        students=students,
        cache_transfer=cache_transfer,
    )
    if checkpoint_dir is None:
        chain.run(tcfg.iterations, progress=progress, desc=desc)
    else:
        folder = Path(checkpoint_dir)
        _resume(chain, tcfg, folder, checkpoint_key, restart=restart, progress=progress, desc=desc)
        _run_checkpointed(chain, tcfg, folder, checkpoint_key, progress=progress, desc=desc)
    chain.finish_students()
    return chain.result()


def _resume(chain: TeacherChain, tcfg: TeacherConfig, folder: Path, key: str, *, restart, progress, desc) -> None:
    """Load the chain's newest checkpoint under ``key`` (after discarding them on ``restart``), if any."""
    if restart:
        clear_checkpoints(folder)
    found = latest_checkpoint(folder, key, device="cpu")
    if found is None:
        return
    it, state = found
    if it > tcfg.iterations:
        raise ChainCheckpointError(
            f"{folder}: the chain already ran {it} iterations, more than teacher.iterations={tcfg.iterations}; "
            f"set teacher.iterations >= {it} or pass --restart"
        )
    chain.load_state_dict(state)
    if progress and it < tcfg.iterations:
        log.info(
            "%s: resuming the chain at iteration %d of %d (%s)",
            desc,
            it,
            tcfg.iterations,
            folder,
        )


def _run_checkpointed(chain: TeacherChain, tcfg: TeacherConfig, folder: Path, key: str, *, progress, desc) -> None:
    """Run the chain to ``tcfg.iterations`` with checkpoints and progress files in ``folder``; keep the final state."""
    total = tcfg.iterations
    note = _progress_note(folder, total, key)

    def save(ch: TeacherChain) -> None:
        save_checkpoint_generation(folder, ch.t, ch.state_dict(), key)

    every = tcfg.checkpoint_every
    chain.run(
        total,
        progress=progress,
        desc=desc,
        on_checkpoint=save if every != 0 else None,
        checkpoint_every=every or None,
        checkpoint_seconds=tcfg.checkpoint_seconds,
        on_check=note,
    )
    if every == 0:  # no periodic checkpoints: still keep the final state, so the chain can be extended
        save(chain)
    note(chain, chain.t / max(chain.seconds, 1e-9), state="done")


def _progress_note(folder: Path, total: int, key: str):
    """The chain's progress writer: the progress file, at most every 5 s while running (and when done)."""
    last_note = [0.0]

    def note(ch: TeacherChain, rate: float, state: str = "running") -> None:
        now = time.time()
        if state == "running" and now - last_note[0] < 5.0:
            return
        last_note[0] = now
        write_progress(
            folder,
            iteration=ch.t,
            total=total,
            rate=rate,
            state=state,
            seconds=ch.seconds,
            eta_seconds=(total - ch.t) / rate if rate > 0 else None,
            key=key,
        )

    return note


def student_diverged(step: int) -> DivergenceError:
    """The error of a student whose loss went non-finite by ``step`` (one wording for every caller)."""
    return DivergenceError(f"student diverged (NaN/inf loss) by step {step}; lower distill.lr")


def _artifact_targets(
    teacher: TeacherResult,
    dcfg: DistillConfig,
    exps: Sequence[Expectation],
    gen: torch.Generator,
    device: torch.device,
    n_transfer: int,
):
    if dcfg.target_mode == TargetMode.cached:
        if teacher.transfer is None:
            raise ValueError(
                "distill.target_mode cached needs the teacher's transfer-set means, and this teacher "
                "has none (sampled for online distillation)"
            )
        return CachedTargets(teacher.transfer)
    bank = BankTargets(build(teacher.arch).to(device).eval(), teacher.bank, exps, gen)
    if dcfg.target_mode == TargetMode.running_mean:  # per-example running means over replayed bank samples
        return RunningMeanTargets(bank, n_transfer, teacher.arch.n_classes, device)
    return bank


def _with_derivatives(source, teacher: TeacherResult, cfgs: Sequence[DistillConfig], seed: int):
    """``source`` plus, when a student matches derivatives (any of ``cfgs``), random directions and the
    teacher's directional derivatives (the mean over the whole bank or a random subset of it)."""
    on = [c for c in cfgs if c.derivative_weight > 0]
    if not on:
        return source
    if not teacher.bank:
        raise ValueError("distill.derivative_weight > 0 needs the teacher's sample bank (teacher.bank_size > 0)")
    k = max(c.derivative_directions for c in on)
    samples = max((c.derivative_samples or 0) for c in on) or None
    bank = dict(teacher.bank)
    size = next(iter(bank.values())).shape[0]
    device = next(iter(bank.values())).device
    model = build(teacher.arch).to(device).eval()
    gen = torch.Generator(device=device).manual_seed(derive_seed(seed, "derivative-directions"))

    def targets(idx: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = dict(source(idx, x))
        v = random_directions(x, k, gen)
        sub = bank
        if samples is not None and samples < size:
            pick = torch.randperm(size, device=device, generator=gen)[:samples]
            sub = {n: t.index_select(0, pick) for n, t in bank.items()}
        out["_dir"] = v
        out["_jvp"] = teacher_predictive_jvp(model, sub, x, v, on[0].temperature)
        return out

    return targets


class LockstepRun:
    """Students trained in lockstep from a finished teacher, in as many pieces as the caller wants.

    One minibatch stream (seeded by ``seed``), one target source and one :class:`LockstepTrainer`
    (one Adam and schedule) live across :meth:`run` calls, so ``run(a); run(b)`` trains exactly as
    ``run(a + b)`` does. :meth:`stop` takes students out between pieces (successive halving): the
    others' updates are unchanged, since each student's gradient is its own. Learning-curve points
    fall every ``check_every`` steps of the whole run (default: 20 over ``total`` steps).
    """

    def __init__(
        self,
        trainers: Sequence[StudentTrainer],
        teacher: TeacherResult,
        transfer: torch.Tensor,
        dcfg: DistillConfig,
        data_cfg: DataConfig,
        *,
        seed: int = 0,
        total: int = 1,
        check_every: int | None = None,
    ):
        self.trainers, self.dcfg, self.data_cfg = list(trainers), dcfg, data_cfg
        self.check_every = check_every or max(1, total // 20)
        self.total = total
        device = transfer.device
        self.gen = torch.Generator(device=device).manual_seed(derive_seed(seed, "student-batches"))
        self.transfer = transfer[: dcfg.transfer_size] if dcfg.transfer_size else transfer
        self.source = _with_derivatives(
            _artifact_targets(teacher, dcfg, self.trainers[0].exps, self.gen, device, self.transfer.shape[0]),
            teacher,
            [tr.cfg for tr in self.trainers],
            seed,
        )
        self.lock = LockstepTrainer(self.trainers)
        self.step = 0
        self.diverged: dict[int, int] = {}

    def stop(self, indices: Sequence[int]) -> None:
        """Students (indices into ``trainers``) that take no more steps."""
        self.lock.stop(indices)

    def run(self, steps: int, *, progress: bool = False, desc: str = "students", leave: bool = True) -> dict:
        """``steps`` more steps of every active student; returns this piece's timing and ``diverged``."""
        lock, last = self.lock, self.step + steps
        start = time.perf_counter()
        new: dict[int, int] = {}
        bar = tqdm(range(steps), desc=desc, disable=not progress, unit="step", mininterval=1.0, leave=leave)
        for _ in bar:
            self.step += 1
            idx, x = transfer_batch(self.transfer, self.dcfg.transfer_batch, self.data_cfg, self.gen)
            lock.step(x, self.source(idx, x))
            if self.step % self.check_every == 0 or self.step == last:
                new.update((i, self.step) for i in lock.drop_diverged())
                if not lock.active:
                    break
                if progress:  # the live loss: the learning curve's newest point (read at the check anyway)
                    live = [self.trainers[i].curve[-1][1] for i in lock.active if self.trainers[i].curve]
                    bar.set_postfix_str(_loss_text(live), refresh=False)
        self.diverged.update(new)
        seconds = time.perf_counter() - start
        return {
            "steps": steps,
            "seconds": seconds,
            "steps_per_second": steps / max(seconds, 1e-9),
            "students": len(self.trainers),
            "diverged": new,
        }


def train_students(
    trainers: Sequence[StudentTrainer],
    teacher: TeacherResult,
    transfer: torch.Tensor,
    steps: int,
    dcfg: DistillConfig,
    data_cfg: DataConfig,
    *,
    seed: int = 0,
    check_every: int | None = None,
    progress: bool = False,
    desc: str = "students",
    leave: bool = True,
) -> dict:
    """Train students in lockstep from a finished teacher (the search's batch mode).

    Every step draws one transfer minibatch and computes the targets once (a cached-mean gather, or
    one forward of a bank sample for ``online`` replay) for all students, which then take one joint
    step (:class:`LockstepTrainer`). A student that diverges is dropped and reported in
    ``"diverged"`` (index -> step) while the others go on. The students must share ``exps``.
    Every ``check_every`` steps (default: 20 checks per run) the students' losses are read once:
    divergence is checked and each trainer's ``curve`` (its learning curve) gets a point.
    One :class:`LockstepRun` of ``steps`` steps.
    """
    run = LockstepRun(trainers, teacher, transfer, dcfg, data_cfg, seed=seed, total=steps, check_every=check_every)
    return run.run(steps, progress=progress, desc=desc, leave=leave)


def _loss_text(losses: list[float]) -> str:
    if not losses:
        return ""
    if len(losses) == 1:
        return f"loss {losses[0]:.4g}"
    return f"loss {min(losses):.3g}..{max(losses):.3g} ({len(losses)} students)"


def train_student(
    trainer: StudentTrainer,
    teacher: TeacherResult,
    transfer: torch.Tensor,
    steps: int,
    dcfg: DistillConfig,
    data_cfg: DataConfig,
    *,
    seed: int = 0,
    check_every: int | None = None,
    progress: bool = False,
    desc: str = "student",
) -> dict[str, float]:
    """Train from a finished teacher: ``cached`` means, else replay of the sample bank (``online``)."""
    out = train_students(
        [trainer],
        teacher,
        transfer,
        steps,
        dcfg,
        data_cfg,
        seed=seed,
        check_every=check_every,
        progress=progress,
        desc=desc,
    )
    if out.pop("diverged"):
        raise student_diverged(trainer.steps)
    del out["students"]
    return out


def accumulate_gradients(
    trainer: StudentTrainer,
    teacher: TeacherResult,
    transfer: torch.Tensor,
    batches: int,
    dcfg: DistillConfig,
    data_cfg: DataConfig,
    *,
    seed: int = 0,
    index: int = 0,
) -> None:
    """Average the distillation loss's gradients over ``batches`` transfer minibatches into ``.grad``
    (no step): what a gradient-based importance (Taylor) reads. ``index`` numbers the pruning round."""
    gen = torch.Generator(device=transfer.device).manual_seed(derive_seed(seed, "importance-batches", index))
    transfer = transfer[: dcfg.transfer_size] if dcfg.transfer_size else transfer
    source = _with_derivatives(
        _artifact_targets(teacher, dcfg, trainer.exps, gen, transfer.device, transfer.shape[0]),
        teacher,
        [trainer.cfg],
        seed,
    )
    trainer.model.zero_grad(set_to_none=True)
    for _ in range(batches):
        idx, x = transfer_batch(transfer, dcfg.transfer_batch, data_cfg, gen)
        (trainer.loss(x, source(idx, x)) / batches).backward()
