"""One student step: losses per target, optional group-LASSO penalty, Adam + StepLR.

The step never synchronises with the host: losses stay on the device and a non-finite flag is
accumulated there; callers read it every few thousand steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F

from gped_search.config import DistillConfig
from gped_search.posterior.expectations import Expectation

__all__ = ["soft_cross_entropy", "target_losses", "StudentTrainer"]


def soft_cross_entropy(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float = 1.0
                       ) -> torch.Tensor:
    """-sum p_T log p_S, averaged over the batch: KL(p_T || p_S) plus the (constant) entropy of p_T."""
    return -(target_probs * F.log_softmax(student_logits / temperature, -1)).sum(-1).mean()


def target_losses(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], cfg: DistillConfig
                  ) -> dict[str, torch.Tensor]:
    losses = {}
    for name, target in targets.items():
        out = outputs[name]
        if name == "predictive":
            losses[name] = soft_cross_entropy(out, target, cfg.temperature)
        elif cfg.entropy_loss.value == "l1":
            losses[name] = (out - target).abs().mean()
        else:
            losses[name] = (out - target).pow(2).mean()
    return losses


class StudentTrainer:
    """Holds a student, its optimiser and schedule; ``step`` does one update from given targets."""

    def __init__(self, model: torch.nn.Module, exps: Sequence[Expectation], cfg: DistillConfig, *,
                 lr: float | None = None, penalty: Callable[[], torch.Tensor] | None = None,
                 penalty_weight: float = 0.0):
        self.model, self.exps, self.cfg = model, tuple(exps), cfg
        self.opt = torch.optim.Adam(model.parameters(), lr=lr or cfg.lr)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, cfg.lr_step, cfg.lr_gamma)
        self.penalty, self.penalty_weight = penalty, penalty_weight
        device = next(model.parameters()).device
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.last_loss = torch.zeros((), device=device)
        self.steps = 0

    def step(self, x: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        self.model.train()
        outputs = self.model.named_outputs(x)
        parts = target_losses(outputs, targets, self.cfg)
        loss = sum(v if k == "predictive" else self.cfg.entropy_weight * v for k, v in parts.items())
        if self.penalty is not None and self.penalty_weight > 0:
            loss = loss + self.penalty_weight * self.penalty()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
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
