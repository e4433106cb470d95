"""Study configuration: the schema of a study file (typed, frozen, validated dataclasses), loading
study files (YAML, ``extends:``, ``--set`` overrides) and the search space. Imports neither torch
nor Optuna.

Modules, bottom-up: :mod:`.schema_chain` (data and teacher-chain settings, their digests),
:mod:`.schema_strategy` (search strategies), :mod:`.space` (``search.space`` specs, metric names),
:mod:`.schema` (the other sections and :class:`StudyConfig`), :mod:`.study_files` (YAML, ``extends:``),
:mod:`.loading` (:func:`load_study`, ``--set``).
"""

from gped_search.choices import (
    Dataset,
    EntropyLoss,
    PruneMethod,
    PruneRule,
    StepSchedule,
    StudentFamily,
    TargetMode,
    TeacherArch,
)
from gped_search.errors import ConfigError

from .loading import load_study, parse_overrides, report_base, study_from_dict
from .schema import (
    CHAIN_LENGTH_KEYS,
    DataConfig,
    DistillConfig,
    HalvingConfig,
    PruneConfig,
    SearchConfig,
    StudentConfig,
    StudyConfig,
    SupernetConfig,
    TeacherConfig,
    chain_settings,
    settings_digest,
    to_dict,
)
from .space import GRID_MAX

__all__ = [
    "ConfigError",
    "Dataset",
    "TeacherArch",
    "StudentFamily",
    "TargetMode",
    "EntropyLoss",
    "StepSchedule",
    "PruneRule",
    "PruneMethod",
    "DataConfig",
    "TeacherConfig",
    "StudentConfig",
    "DistillConfig",
    "PruneConfig",
    "SearchConfig",
    "SupernetConfig",
    "HalvingConfig",
    "StudyConfig",
    "CHAIN_LENGTH_KEYS",
    "GRID_MAX",
    "chain_settings",
    "settings_digest",
    "load_study",
    "report_base",
    "parse_overrides",
    "study_from_dict",
    "to_dict",
]
