"""Settings of the search strategies that spend less than one full training per trial:
``search.supernet`` (a weight-sharing student scores the space) and ``search.halving``
(synchronous successive halving in lockstep). Re-exported by :mod:`gped_search.config.schema`."""

from __future__ import annotations

from dataclasses import dataclass

from .schema_chain import check

__all__ = ["SupernetConfig", "HalvingConfig"]


@dataclass(frozen=True)
class SupernetConfig:
    steps: int | None = None
    """Sandwich steps of the supernet (None = distill.steps: the price of one full trial)."""
    random: int = 2
    """Random sub-networks per step beside the largest and the smallest (the sandwich rule)."""
    samples: int = 300
    """Configurations scored with inherited weights: the whole space when it has at most this many,
    else this many random ones (the smallest and the largest always among them)."""
    finetune_steps: int | None = None
    """Distillation steps of each extracted front member, from its inherited weights (None = a fifth
    of distill.steps), before pruning and pruning's own fine-tuning."""
    check: int = 0
    """Configurations not chosen, each distilled alone at full length, to measure how well inherited
    scores rank stand-alone training (Kendall tau, in the study and the report). Diagnostic only: they
    are not trials, and their seconds are recorded apart (``supernet_check_seconds``)."""

    def __post_init__(self) -> None:
        check(self.steps is None or self.steps >= 1, f"search.supernet.steps must be >= 1, got {self.steps}")
        check(self.random >= 0, f"search.supernet.random must be >= 0, got {self.random}")
        check(self.samples >= 2, f"search.supernet.samples must be >= 2, got {self.samples}")
        check(
            self.finetune_steps is None or self.finetune_steps >= 0,
            f"search.supernet.finetune_steps must be >= 0, got {self.finetune_steps}",
        )
        check(self.check == 0 or self.check >= 3, f"search.supernet.check must be 0 or >= 3, got {self.check}")


@dataclass(frozen=True)
class HalvingConfig:
    eta: int = 3
    """Keep the best 1/eta of the configurations at each rung (ties on the front are kept)."""
    rungs: int | None = None
    """Rungs before full length (None: as many as the configurations allow, at most 3)."""
    n: int | None = None
    """Configurations asked at the first rung (None: from search.n_trials, the trials that reach full length)."""

    def __post_init__(self) -> None:
        check(self.eta >= 2, f"search.halving.eta must be >= 2, got {self.eta}")
        check(self.rungs is None or self.rungs >= 1, f"search.halving.rungs must be >= 1, got {self.rungs}")
        check(self.n is None or self.n >= 2, f"search.halving.n must be >= 2, got {self.n}")
