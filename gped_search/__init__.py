"""gped-search: distil Bayesian posterior expectations into small students and search them.

Python API (the CLI ``gped-search`` calls the same functions)::

    from gped_search import load_study, run_study, trials_frame, distill_online
    cfg = load_study("studies/quickstart.yaml", ["search.n_trials=4"])
    study = run_study(cfg)                 # samples the teacher once, then the Optuna trials
    df = trials_frame(study)               # every trial, objectives, metrics, on_front
"""

# Names are imported on first use (PEP 562), so that ``gped-search --help`` or ``status`` do not pay
# for torch: ``from gped_search import run_study`` works as before.
_EXPORTS = {
    "distill_online": "gped_search.engine.online",
    "prepare": "gped_search.engine",
    "sample_teacher": "gped_search.engine",
    "train_trial": "gped_search.engine",
    "train_trials": "gped_search.engine",
    "StudentResult": "gped_search.engine",
    "StudentFailure": "gped_search.engine",
    "ConfigError": "gped_search.config",
    "StudyConfig": "gped_search.config",
    "load_study": "gped_search.config",
    "DataError": "gped_search.data",
    "make_bundle": "gped_search.data",
    "CheckpointError": "gped_search.checkpoints",
    "load_checkpoint": "gped_search.checkpoints",
    "save_checkpoint": "gped_search.checkpoints",
    "ArtifactError": "gped_search.posterior.artifact",
    "load_teacher": "gped_search.posterior.artifact",
    "save_teacher": "gped_search.posterior.artifact",
    "Expectation": "gped_search.posterior.expectations",
    "register_expectation": "gped_search.posterior.expectations",
    "SGLD": "gped_search.posterior.sgld",
    "DivergenceError": "gped_search.posterior.sgld",
    "open_study": "gped_search.search",
    "run_study": "gped_search.search",
    "study_status": "gped_search.search",
    "trials_frame": "gped_search.search",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gped_search' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "distill_online",
    "prepare",
    "sample_teacher",
    "train_trial",
    "train_trials",
    "StudentResult",
    "StudentFailure",
    "ConfigError",
    "StudyConfig",
    "load_study",
    "DataError",
    "make_bundle",
    "CheckpointError",
    "load_checkpoint",
    "save_checkpoint",
    "ArtifactError",
    "load_teacher",
    "save_teacher",
    "Expectation",
    "register_expectation",
    "SGLD",
    "DivergenceError",
    "open_study",
    "run_study",
    "study_status",
    "trials_frame",
    "__version__",
]
