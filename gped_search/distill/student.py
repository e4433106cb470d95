"""One student step: losses per target, optional group-LASSO penalty or gradient regulariser, Adam + StepLR.

The step never synchronises with the host: losses stay on the device and a non-finite flag is
accumulated there; callers read it every few thousand steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F

from gped_search.config import DistillConfig
from gped_search.distill.auxiliary import derivative_loss, relational_loss, student_predictive_jvp
from gped_search.posterior.expectations import Expectation

__all__ = ["soft_cross_entropy", "target_losses", "StudentTrainer", "LockstepTrainer"]


def soft_cross_entropy(
    student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """-sum p_T log p_S, averaged over the batch: KL(p_T || p_S) plus the (constant) entropy of p_T."""
    return -(target_probs * F.log_softmax(student_logits / temperature, -1)).sum(-1).mean()


def target_losses(
    outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], cfg: DistillConfig
) -> dict[str, torch.Tensor]:
    losses = {}
    for name, target in targets.items():
        if name.startswith("_"):  # auxiliary inputs (derivative directions), not a head's target
            continue
        out = outputs[name]
        if name == "predictive":  # the student's net already divides its logits by the temperature
            losses[name] = soft_cross_entropy(out, target)
        elif cfg.entropy_loss.value == "l1":
            losses[name] = (out - target).abs().mean()
        else:
            losses[name] = (out - target).pow(2).mean()
    return losses


class StudentTrainer:
    """Holds a student, its optimiser and schedule; ``step`` does one update from given targets."""

    def __init__(
        self,
        model: torch.nn.Module,
        exps: Sequence[Expectation],
        cfg: DistillConfig,
        *,
        lr: float | None = None,
        penalty: Callable[[], torch.Tensor] | None = None,
        penalty_weight: float = 0.0,
        grad_hook: Callable[[], None] | None = None,
    ):
        self.model, self.exps, self.cfg = model, tuple(exps), cfg
        self.grad_hook = grad_hook  # runs after backward, before the step (Torch-Pruning's regularisers)
        self.opt = torch.optim.Adam(model.parameters(), lr=lr or cfg.lr)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, cfg.lr_step, cfg.lr_gamma)
        self.penalty, self.penalty_weight = penalty, penalty_weight
        device = next(model.parameters()).device
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.last_loss = torch.zeros((), device=device)
        self.steps = 0
        self.curve: list[tuple[int, float]] = []  # (step, loss) at each check: the trial's learning curve

    def loss(self, x: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """The student's distillation loss on ``x`` (weighted targets + group-LASSO penalty)."""
        self.model.train()
        outputs = self.model.named_outputs(x)
        loss = self.target_loss(outputs, targets)
        if self.cfg.derivative_weight > 0:
            if "_jvp" not in targets:
                raise ValueError("distill.derivative_weight > 0 needs the teacher's derivatives in the targets")
            jv = student_predictive_jvp(self.model, x, targets["_dir"])
            loss = loss + self.cfg.derivative_weight * derivative_loss(jv, targets["_jvp"])
        if self.penalty is not None and self.penalty_weight > 0:
            loss = loss + self.penalty_weight * self.penalty()
        return loss

    def target_loss(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted loss of the heads' ``outputs`` against the targets (plus relational distillation)."""
        parts = target_losses(outputs, targets, self.cfg)
        loss = sum(v if k == "predictive" else self.cfg.other_targets_weight * v for k, v in parts.items())
        if self.cfg.relational_weight > 0:
            probs = F.softmax(outputs["predictive"], -1)
            loss = loss + self.cfg.relational_weight * relational_loss(probs, targets["predictive"])
        return loss

    def step(self, x: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = self.loss(x, targets)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_hook is not None:
            self.grad_hook()
        self.opt.step()
        self.sched.step()
        self.steps += 1
        loss = loss.detach()
        self.nonfinite |= ~torch.isfinite(loss)
        self.last_loss = loss
        return loss

    def diverged(self) -> bool:
        """One host sync."""
        return bool(self.nonfinite)


class LockstepTrainer:
    """Several students stepped together: one minibatch, one set of targets, one backward, one Adam.

    The students share no parameters, so the gradient of the *sum* of their losses with respect to
    one student's parameters is that student's own gradient: one ``backward`` serves all of them,
    and one Adam (a parameter group per distinct learning rate; ``foreach`` kernels span the group)
    updates all of them. A student whose loss turns non-finite is flagged on the device and dropped
    at the next :meth:`drop_diverged` (its NaNs never reach the others). With one student this is
    exactly ``StudentTrainer.step``.
    """

    def __init__(self, trainers: Sequence[StudentTrainer]):
        if not trainers:
            raise ValueError("LockstepTrainer needs at least one student")
        self.trainers = list(trainers)
        self.active = list(range(len(self.trainers)))
        if len(self.trainers) == 1:
            self.opt, self.sched = self.trainers[0].opt, self.trainers[0].sched
        else:
            cfg = self.trainers[0].cfg
            by_lr: dict[float, list[torch.nn.Parameter]] = {}
            for tr in self.trainers:
                by_lr.setdefault(tr.opt.param_groups[0]["lr"], []).extend(tr.model.parameters())
            self.opt = torch.optim.Adam([{"params": ps, "lr": lr} for lr, ps in by_lr.items()])
            self.sched = torch.optim.lr_scheduler.StepLR(self.opt, cfg.lr_step, cfg.lr_gamma)
        device = next(self.trainers[0].model.parameters()).device
        self.nonfinite = torch.zeros(len(self.trainers), dtype=torch.bool, device=device)
        self._idx = torch.arange(len(self.trainers), device=device)
        self._last: tuple[list[int], torch.Tensor] | None = None

    def step(self, x: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """One update of every active student; returns their losses (on the device, no sync)."""
        losses = torch.stack([self.trainers[i].loss(x, targets) for i in self.active])
        self.opt.zero_grad(set_to_none=True)  # dropped students keep grad None: Adam skips them
        losses.sum().backward()
        for i in self.active:
            if self.trainers[i].grad_hook is not None:
                self.trainers[i].grad_hook()
        self.opt.step()
        self.sched.step()
        losses = losses.detach()
        self.nonfinite.index_put_((self._idx,), self.nonfinite[self._idx] | ~torch.isfinite(losses))
        for i in self.active:
            self.trainers[i].steps += 1
        self._last = (self.active, losses)  # handed to the trainers' last_loss at the next check
        return losses

    def stop(self, indices) -> None:
        """Students that take no more steps (their parameters keep their values; Adam skips them)."""
        gone = set(indices)
        self.active = [i for i in self.active if i not in gone]
        self._idx = torch.tensor(self.active, dtype=torch.long, device=self.nonfinite.device)
        if self._last is not None:  # their last losses still go to their curves at the next check
            active, losses = self._last
            self._flush(active, losses)
            self._last = None

    def _flush(self, active: list[int], losses: torch.Tensor) -> None:
        values = losses.tolist()
        for j, i in enumerate(active):
            self.trainers[i].last_loss = losses[j]
            self.trainers[i].curve.append((self.trainers[i].steps, values[j]))

    def drop_diverged(self) -> list[int]:
        """Indices of students that went non-finite since the last call; they stop training. One sync.

        Also sets every active student's ``last_loss`` (kept on the device between checks)."""
        if self._last is not None:  # the check syncs anyway: keep the learning curve
            self._flush(*self._last)
            self._last = None
        flags = self.nonfinite.tolist()
        gone = [i for i in self.active if flags[i]]
        for i in gone:
            self.trainers[i].nonfinite.fill_(True)
        if gone:
            self.active = [i for i in self.active if not flags[i]]
            self._idx = torch.tensor(self.active, dtype=torch.long, device=self.nonfinite.device)
        return gone
