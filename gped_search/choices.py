"""The named choices of a study file (datasets, architectures, modes): the bottom layer, no imports."""

from __future__ import annotations

import enum

__all__ = [
    "Dataset",
    "TeacherArch",
    "StudentFamily",
    "TargetMode",
    "EntropyLoss",
    "StepSchedule",
    "TeacherSampler",
    "TeacherInit",
    "PruneRule",
    "PruneMethod",
    "Precision",
    "LatencyBackend",
    "SearchStrategy",
]


class Dataset(str, enum.Enum):
    digits = "digits"
    mnist = "mnist"
    fashion_mnist = "fashion_mnist"


class TeacherArch(str, enum.Enum):
    mlp = "mlp"
    cnn = "cnn"
    cifar_cnn = "cifar_cnn"


class StudentFamily(str, enum.Enum):
    mlp = "mlp"
    cnn = "cnn"


class TargetMode(str, enum.Enum):
    online = "online"
    running_mean = "running_mean"
    cached = "cached"


class EntropyLoss(str, enum.Enum):
    l1 = "l1"
    l2 = "l2"


class StepSchedule(str, enum.Enum):
    constant = "constant"
    polynomial = "polynomial"
    step = "step"


class TeacherSampler(str, enum.Enum):
    sgld = "sgld"
    psgld = "psgld"
    sgd = "sgd"


class TeacherInit(str, enum.Enum):
    default = "default"
    xavier_in = "xavier_in"


class PruneRule(str, enum.Enum):
    threshold = "threshold"
    ratio = "ratio"
    budget = "budget"


class PruneMethod(str, enum.Enum):
    group_lasso = "group_lasso"
    magnitude = "magnitude"
    taylor = "taylor"
    group_norm = "group_norm"
    growing_reg = "growing_reg"


class Precision(str, enum.Enum):
    fp32 = "fp32"
    int8 = "int8"


class LatencyBackend(str, enum.Enum):
    torch = "torch"
    onnxruntime = "onnxruntime"


class SearchStrategy(str, enum.Enum):
    trials = "trials"
    supernet = "supernet"
    halving = "halving"
