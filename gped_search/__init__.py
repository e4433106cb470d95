"""gped-search: distil Bayesian posterior expectations into small students and search them.

Python API (the CLI ``gped-search`` calls the same functions)::

    from gped_search import load_study, run_study, trials_frame, distill
    cfg = load_study("studies/quickstart.yaml", ["search.n_trials=4"])
    study = run_study(cfg)                 # samples the teacher once, then the Optuna trials
    df = trials_frame(study)               # every trial, objectives, metrics, on_front
"""

from gped_search.api import distill, prepare, sample_teacher, train_trial, train_trials
from gped_search.config import ConfigError, StudyConfig, load_study
from gped_search.data import DataError, make_bundle
from gped_search.export import CheckpointError, load_checkpoint, save_checkpoint
from gped_search.posterior.artifact import ArtifactError, load_teacher, save_teacher
from gped_search.posterior.expectations import Expectation, register_expectation
from gped_search.posterior.sgld import SGLD, DivergenceError
from gped_search.search import open_study, run_study, study_status, trials_frame

__version__ = "0.1.0"

__all__ = ["distill", "prepare", "sample_teacher", "train_trial", "train_trials", "ConfigError", "StudyConfig", "load_study",
           "DataError", "make_bundle", "CheckpointError", "load_checkpoint", "save_checkpoint", "ArtifactError",
           "load_teacher", "save_teacher", "Expectation", "register_expectation", "SGLD", "DivergenceError",
           "open_study", "run_study", "study_status", "trials_frame", "__version__"]
