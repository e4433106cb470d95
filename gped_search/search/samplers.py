"""The study's sampler (TPE, NSGA-II, random, grid) and the search's seed."""

from __future__ import annotations

import optuna

from gped_search.config import StudyConfig

from .space import Spec, grid_space

__all__ = ["search_seed", "make_sampler"]


def search_seed(cfg: StudyConfig) -> int:
    """The seed of the sampler and of the trials' students: ``search.seed``, else the study seed."""
    return cfg.seed if cfg.search.seed is None else cfg.search.seed


def make_sampler(cfg: StudyConfig, specs: dict[str, Spec], seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded with ``seed`` (default: the study seed)."""
    s, seed = cfg.search, search_seed(cfg) if seed is None else seed
    if s.sampler == "grid":
        return optuna.samplers.GridSampler(grid_space(specs, len(cfg.student.widths)), seed=seed)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=min(50, max(4, (s.n_trials or 50) // 4)))
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=min(10, max(2, (s.n_trials or 20) // 2)),
        multivariate=True,
        constant_liar=True,
    )
