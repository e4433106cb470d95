"""The teacher's SGLD chain as a resumable, extendable object.

:class:`TeacherChain` holds everything a run of the chain carries from one iteration to the next:
the chains' parameters, every generator (minibatches and noise, transfer draws, the global RNG for
student dropout), the posterior accumulators (test, validation, OOD, transfer), the evenly spaced
sample bank, and, for online distillation, the students with their optimiser, schedule and
running-mean targets. ``state_dict`` / ``load_state_dict`` round-trip all of it as plain data, so a
run killed at any point and resumed from its last checkpoint ends bitwise equal to an uninterrupted
run on the CPU, and a finished chain can be run further (``run(until=...)`` with a larger total).

One teacher estimate: test, validation, OOD and transfer means are accumulated over the *same*
thinned iterates (every ``thin`` post-burn-in iterations), so cached student targets and the scores
students are judged by come from one estimator. The bank used for online replay is an evenly spaced
subset of those iterates: it keeps every ``stride``-th thinned sample and, when it reaches twice its
capacity, drops every other one and doubles ``stride``. It therefore stays evenly spaced over the
whole chain however long the chain is run (between ``bank_size`` and ``2 bank_size - 1`` samples
once enough exist), which is what makes extension equal to having asked for the longer run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from gped_search.config import DataConfig, DistillConfig, TargetMode, TeacherConfig
from gped_search.data import DataBundle, perturb
from gped_search.distill.chain_state import chain_state, load_chain_state
from gped_search.distill.student import LockstepTrainer, StudentTrainer
from gped_search.distill.targets import OnlineTargets, RunningMeanTargets
from gped_search.metrics.quality import predictive_metrics
from gped_search.models import Arch
from gped_search.posterior.expectations import Expectation, PosteriorAccumulator
from gped_search.posterior.sgld import SGLD, DivergenceError
from gped_search.seeds import derive_seed

__all__ = ["TeacherChain", "FLOOR_BLOCK", "mc_floor_kl", "trace_rows", "transfer_batch"]

FLOOR_BLOCK = 5
"""Thinned samples per block when splitting the test samples into two disjoint halves (A/B blocks)."""


def mc_floor_kl(p_a: torch.Tensor, p_b: torch.Tensor) -> float:
    """KL(p_a || p_b) averaged over examples: two disjoint halves' estimates of the predictive.

    Two students that each matched one half exactly would disagree this much, so it is the scale of
    KL below which differences between students are Monte-Carlo noise of the teacher. (For
    independent halves, the full-sample mean's own KL from the exact posterior predictive is about a
    quarter of it.)
    """
    la, lb = p_a.clamp_min(1e-12).log(), p_b.clamp_min(1e-12).log()
    return float((p_a * (la - lb)).sum(1).mean())


def trace_rows(trace: list[torch.Tensor]) -> list[list[float]]:
    """The chain's per-sample test log-likelihoods as plain rows (one host transfer for the whole trace)."""
    if not trace:
        return []
    return [[round(v, 6) for v in row] for row in torch.stack(trace).cpu().tolist()]


def transfer_batch(
    transfer: torch.Tensor, batch: int, data: DataConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A transfer minibatch drawn with replacement and perturbed: (indices, inputs)."""
    idx = torch.randint(0, transfer.shape[0], (batch,), device=transfer.device, generator=gen)
    return idx, perturb(transfer[idx], data.perturb_sigma, data.clamp, gen)


class TeacherChain:
    """SGLD chain(s) with online distillation; see the module docstring."""

    def __init__(
        self,
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
    ):
        self.tcfg, self.dcfg, self.data_cfg, self.bundle = tcfg, dcfg, data_cfg, bundle
        self.arch, self.exps, self.seed = arch, tuple(exps), seed
        self.students = tuple(students)
        device = bundle.test.x.device
        self.device = device
        self.sampler = SGLD(
            arch,
            bundle.train.x,
            bundle.train.y,
            step_size=tcfg.step_size,
            prior_precision=tcfg.prior_precision,
            batch_size=tcfg.batch_size,
            chains=tcfg.chains,
            schedule=tcfg.schedule,
            decay_t0=tcfg.decay_t0,
            decay_gamma=tcfg.decay_gamma,
            decay_every=tcfg.decay_every,
            decay_factor=tcfg.decay_factor,
            sampler=tcfg.sampler,
            psgld_alpha=tcfg.psgld_alpha,
            psgld_damping=tcfg.psgld_damping,
            init=tcfg.init,
            init_magnitude=tcfg.init_magnitude,
            noise_thread=tcfg.noise_thread,
            seed=seed,
        )
        if tcfg.cuda_graph:
            self.sampler.capture_cuda_graph()
        k = bundle.n_classes
        # The inputs whose posterior means the chain accumulates, all over the same thinned iterates.
        self.inputs = {"test": bundle.test.x}
        if bundle.val is not None:
            self.inputs["val"] = bundle.val.x
        if bundle.ood is not None:
            self.inputs["ood"] = bundle.ood.x
        if cache_transfer:
            self.inputs["transfer"] = bundle.transfer
        self.acc = {name: PosteriorAccumulator(x.shape[0], k, self.exps, device) for name, x in self.inputs.items()}
        pred = [e for e in self.exps if e.name == "predictive"]
        self.halves = [PosteriorAccumulator(len(bundle.test), k, pred, device) for _ in range(2)]
        # per thinned sample, per chain: mean test log-likelihood of that sample (split R-hat, ESS)
        self.trace: list[torch.Tensor] = []
        self.lock = LockstepTrainer(self.students) if self.students else None
        self.averages = []  # distill.online_average polyak: each student's weight average
        if self.students and dcfg.online_average == "polyak":
            from torch.optim.swa_utils import AveragedModel

            self.averages = [AveragedModel(tr.model, use_buffers=True) for tr in self.students]
            online_steps = max(0, tcfg.iterations - tcfg.burn_in) // dcfg.every
            self.average_from = int(dcfg.online_average_start * online_steps)
        self.source = None
        if self.students:
            self.source = OnlineTargets(self.sampler.logits, self.exps, dcfg.temperature)
            if dcfg.target_mode == TargetMode.running_mean:
                self.source = RunningMeanTargets(self.source, bundle.transfer.shape[0], k, device)
        self.data_gen = torch.Generator(device=device).manual_seed(derive_seed(seed, "chain-batches"))
        self.capacity = max(1, math.ceil(tcfg.bank_size / tcfg.chains))  # snapshots (each holds every chain)
        self.stride = 1  # keep every stride-th thinned sample in the bank
        self.bank: list[tuple[int, list[torch.Tensor]]] = []  # (thinned sample index, snapshot)
        self.samples = 0  # thinned samples accumulated so far
        self.seconds = 0.0  # sampling wall time over every session of this chain
        self.history: list[dict] = []
        self.sessions = 0

    # ------------------------------------------------------------------ running
    @property
    def t(self) -> int:
        return self.sampler.t

    def _thinned(self) -> None:
        test_logits = None
        for name, acc in self.acc.items():
            z = self.sampler.logits(self.inputs[name])
            acc.update(z)
            if name == "test":
                test_logits = z
        self.samples += 1
        self.halves[((self.samples - 1) // FLOOR_BLOCK) % 2].update(test_logits)
        y = self.bundle.test.y
        lp = torch.log_softmax(test_logits.float(), -1).gather(-1, y.expand(test_logits.shape[0], -1)[..., None])
        self.trace.append(lp.mean((1, 2)))  # stays on the device: no sync here
        if self.samples % self.stride == 0:
            self.bank.append((self.samples, self.sampler.snapshot()))
            if len(self.bank) >= 2 * self.capacity:
                self.stride *= 2
                self.bank = [(s, snap) for s, snap in self.bank if s % self.stride == 0]

    def _check(self, t: int) -> None:
        if not self.sampler.is_finite():
            raise DivergenceError(f"SGLD diverged (NaN/inf parameters) by iteration {t}; lower teacher.step_size")
        gone = self.lock.drop_diverged() if self.lock is not None else []
        if gone:
            raise DivergenceError(f"student {gone[0]} diverged (NaN/inf loss) by iteration {t}; lower distill.lr")

    def metrics_now(self) -> dict:
        """The teacher's test metrics from the samples so far (empty before the first thinned sample)."""
        acc = self.acc["test"]
        if acc.count == 0:
            return {}
        return {
            "iteration": self.t,
            "seconds": round(self.seconds, 3),
            "test_samples": acc.count,
            **predictive_metrics(acc.means()["predictive"], self.bundle.test.y, "teacher"),
        }

    def run(
        self,
        until: int,
        *,
        progress: bool = True,
        desc: str = "teacher",
        on_checkpoint: Callable[[TeacherChain], None] | None = None,
        checkpoint_every: int | None = None,
        checkpoint_seconds: float = 300.0,
        on_check: Callable[[TeacherChain, float], None] | None = None,
    ) -> None:
        """Advance the chain to iteration ``until`` (no-op if it is already there).

        ``on_checkpoint(self)`` is called at iterations divisible by ``checkpoint_every`` (if given,
        > 0), else at the first divergence check after ``checkpoint_seconds`` of work, and at the end.
        ``on_check(self, rate)`` is called at every divergence check (progress notes).
        """
        start_t = self.t
        self.sessions += 1
        start = time.perf_counter()
        base_seconds = self.seconds
        bar = tqdm(
            total=until,
            initial=start_t,
            desc=desc,
            disable=not progress,
            unit="it",
            mininterval=1.0,
        )
        try:
            self._loop(
                start_t, until, start, base_seconds, bar, on_checkpoint, checkpoint_every, checkpoint_seconds, on_check
            )
        finally:
            self.sampler.close()  # stop the draws' producer thread (its unconsumed draws are rewound)
            bar.close()
        self.seconds = base_seconds + (time.perf_counter() - start)
        if until > start_t and (not self.history or self.history[-1].get("iteration") != self.t):
            self.history.append(self.metrics_now() or {"iteration": self.t, "seconds": round(self.seconds, 3)})

    def _loop(
        self, start_t, until, start, base_seconds, bar, on_checkpoint, checkpoint_every, checkpoint_seconds, on_check
    ) -> None:
        tc, dc, b = self.tcfg, self.dcfg, self.bundle
        last_ckpt = start
        for t in range(start_t + 1, until + 1):
            self.sampler.step()
            after = t - tc.burn_in
            if after > 0 and after % tc.thin == 0:
                self._thinned()
            if after > 0 and t % dc.every == 0 and self.students:
                idx, x = transfer_batch(b.transfer, dc.transfer_batch, self.data_cfg, self.data_gen)
                self.lock.step(x, self.source(idx, x))
                if self.averages and self.students[0].steps > self.average_from:
                    for avg, tr in zip(self.averages, self.students):
                        avg.update_parameters(tr.model)
            at_check = t % tc.check_every == 0 or t == until
            if at_check:
                self._check(t)  # the loop's only host syncs
                now = time.perf_counter()
                self.seconds = base_seconds + (now - start)
                bar.update(t - bar.n)
                if self.students:
                    bar.set_postfix(loss=f"{float(self.students[0].last_loss):.4f}", refresh=False)
                if on_check is not None:
                    on_check(self, (t - start_t) / max(now - start, 1e-9))
            due = (checkpoint_every and t % checkpoint_every == 0) or (
                not checkpoint_every and at_check and time.perf_counter() - last_ckpt >= checkpoint_seconds
            )
            if on_checkpoint is not None and (due or t == until):
                if not at_check:
                    self._check(t)
                    self.seconds = base_seconds + (time.perf_counter() - start)
                self.history.append(self.metrics_now() or {"iteration": t, "seconds": round(self.seconds, 3)})
                on_checkpoint(self)
                last_ckpt = time.perf_counter()

    @torch.no_grad()
    def finish_students(self) -> None:
        """With distill.online_average polyak: load each student's weight average into the student (after
        the chain's last checkpoint, which keeps the raw student and the average for an extension)."""
        for avg, tr in zip(self.averages, self.students):
            if int(avg.n_averaged) > 0:
                for p, q in zip(tr.model.parameters(), avg.module.parameters()):
                    p.copy_(q)

    # ------------------------------------------------------------------ results
    def result(self):
        """The teacher result at the current iteration (the chain itself is left untouched)."""
        from gped_search.posterior.result import TeacherResult

        accs = dict(self.acc)
        if self.acc["test"].count == 0:  # fewer post-burn-in iterations than `thin`: the current sample
            accs = {}
            for name, x in self.inputs.items():
                accs[name] = PosteriorAccumulator(x.shape[0], self.bundle.n_classes, self.exps, self.device)
                accs[name].update(self.sampler.logits(x))
        bank = [snap for _, snap in self.bank] or [self.sampler.snapshot()]
        bank_t = {k: torch.cat([snap[i] for snap in bank]) for i, k in enumerate(self.sampler.names)}
        test = accs["test"].means()
        metrics = predictive_metrics(test["predictive"], self.bundle.test.y, "teacher")
        if "val" in accs:
            metrics.update(predictive_metrics(accs["val"].means()["predictive"], self.bundle.val.y, "teacher_val"))
        floor = float("nan")
        if all(h.count > 0 for h in self.halves):
            floor = mc_floor_kl(self.halves[0].means()["predictive"], self.halves[1].means()["predictive"])
        metrics["teacher_mc_floor_kl"] = floor
        # The chain's current state alone (one sample; for sampler sgd, the point estimate BDK reports).
        last = torch.softmax(self.sampler.logits(self.bundle.test.x), -1).mean(0)
        metrics.update(predictive_metrics(last, self.bundle.test.y, "teacher_last"))
        t = self.t
        stats = {
            "iterations": t,
            "seconds": self.seconds,
            "ms_per_iteration": 1000 * self.seconds / max(t, 1),
            "test_samples": accs["test"].count,
            "bank_samples": next(iter(bank_t.values())).shape[0],
            "bank_spacing": self.stride * self.tcfg.thin,
            "chains": self.tcfg.chains,
            "student_steps": self.students[0].steps if self.students else 0,
            "sessions": self.sessions,
            "history": list(self.history),
            "test_loglik_trace": trace_rows(self.trace),
            "test_loglik_trace_start": self.samples - len(self.trace),  # thinned samples before the trace began
        }
        return TeacherResult(
            self.arch,
            test,
            accs["ood"].means() if "ood" in accs else None,
            accs["transfer"].means() if "transfer" in accs else None,
            bank_t,
            metrics,
            stats,
            val=accs["val"].means() if "val" in accs else None,
        )

    # ------------------------------------------------------------------ state (chain_state.py)
    def state_dict(self) -> dict:
        return chain_state(self)

    def load_state_dict(self, d: dict) -> None:
        load_chain_state(self, d)
