"""The study's sampler: TPE, NSGA-II, random, grid, scrambled-Sobol QMC or GP, seeded by the search's seed."""

from __future__ import annotations

import optuna

from gped_search.config import StudyConfig
from gped_search.config.space import Spec, grid_space
from gped_search.seeds import search_seed

__all__ = ["make_sampler"]


def make_sampler(cfg: StudyConfig, specs: dict[str, Spec], seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded with ``seed`` (default: :func:`gped_search.seeds.search_seed`)."""
    s, seed = cfg.search, search_seed(cfg) if seed is None else seed
    if s.sampler == "grid":
        return optuna.samplers.GridSampler(grid_space(specs, len(cfg.student.widths)), seed=seed)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = s.n_startup_trials or min(10, max(2, (s.n_trials or 20) // 2))
    if s.sampler == "qmc":  # space-filling: scrambled Sobol points (categoricals are drawn at random)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(
                qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False
            )
    if s.sampler == "gp":
        import warnings

        with warnings.catch_warnings():  # "experimental" in some Optuna versions
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=min(50, max(4, (s.n_trials or 50) // 4)))
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=startup,
        multivariate=True,
        constant_liar=True,
    )
