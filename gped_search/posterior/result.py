"""What a teacher run leaves behind (the posterior layer's product; distillation and search consume it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gped_search.models import Arch

__all__ = ["TeacherResult"]


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
    val: dict[str, torch.Tensor] | None = None  # posterior means on the validation split (same iterates)
