"""The data and teacher-chain sections of a study file (:class:`DataConfig`, :class:`TeacherConfig`).

Split from :mod:`gped_search.config.schema` (which re-exports both): these are the settings a teacher chain
depends on, and the digests that identify a chain (:func:`chain_settings`, :func:`settings_digest`,
:func:`to_dict`). :data:`RECIPE_DEFAULTS` lists the keys added after artifacts already existed; at their old
behaviour they are left out of the settings digests, so an old artifact keeps its key and loads.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from gped_search.choices import Dataset, StepSchedule, TeacherArch, TeacherInit, TeacherSampler
from gped_search.errors import ConfigError

__all__ = [
    "check",
    "DataConfig",
    "TeacherConfig",
    "RECIPE_DEFAULTS",
    "RENAMED_KEYS",
    "CHAIN_LENGTH_KEYS",
    "chain_settings",
    "settings_digest",
    "to_dict",
]


def check(cond: bool, msg: str) -> None:
    """Raise :class:`ConfigError` with ``msg`` unless ``cond`` (every range check of the schema)."""
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class DataConfig:
    dataset: Dataset = Dataset.digits
    """Dataset name: digits (embedded, scikit-learn), mnist or fashion_mnist (from `root`)."""
    root: str | None = None
    """Data root holding `<Name>/raw/*.gz`; default: $GPED_DATA_ROOT, then ../shared/data."""
    mask_size: int = 0
    """Side in pixels of the square zero patch put once on each image (0 = no occlusion)."""
    train_subset: int | None = None
    """Use the first k training images for the teacher (None = all); the transfer set stays full."""
    perturb_sigma: float = 0.001
    """Std of the Gaussian noise added to transfer inputs before each student step."""
    clamp: bool = True
    """Clamp perturbed transfer inputs to [0, 1]."""
    ood: Dataset | None = None
    """Out-of-distribution test set scored with the same model (e.g. fashion_mnist for mnist)."""
    validation: float | None = None
    """Validation split carved from the training set, never seen by teacher or students: a count
    (>= 1), a fraction (< 1) or 0 (none: the paper's full training set, selection falls back to the
    test set). None = 10,000 for MNIST-style data, 20 % for digits. Seed-independent."""
    pixel_divisor: float = 255.0
    """The networks see uint8 pixels divided by this: 255 (inputs in [0, 1]) or BDK's 126 (inputs in
    [0, 2.02]). Applied as a fixed input scale 255 / pixel_divisor inside teacher and students, so
    files, occlusion, perturbation, attacks and exported models all keep [0, 1] inputs."""

    def __post_init__(self) -> None:
        check(
            self.validation is None
            or (
                isinstance(self.validation, (int, float))
                and self.validation >= 0
                and (self.validation < 1 or float(self.validation).is_integer())
            ),
            "data.validation must be 0, a fraction in (0, 1) or a whole count",
        )
        check(self.mask_size >= 0, "data.mask_size must be >= 0")
        check(self.train_subset is None or self.train_subset > 0, "data.train_subset must be > 0")
        check(self.perturb_sigma >= 0, "data.perturb_sigma must be >= 0")
        check(self.pixel_divisor > 0, f"data.pixel_divisor must be > 0, got {self.pixel_divisor}")

    @property
    def input_scale(self) -> float:
        """The networks' fixed input scale: 255 / pixel_divisor (1 for the default)."""
        return 255.0 / self.pixel_divisor


@dataclass(frozen=True)
class TeacherConfig:
    arch: TeacherArch = TeacherArch.mlp
    """Teacher network: mlp (hidden widths below), cnn (MNIST CNN) or cifar_cnn."""
    widths: tuple[int, ...] = (400, 400)
    """Hidden widths of the MLP teacher (the paper: 400, 400)."""
    kernel: int | None = None
    """Conv kernel size for CNN teachers (None = the paper's: 4 for cnn, 5 for cifar_cnn)."""
    padding: int = 0
    """Conv padding for CNN teachers and students (1 with kernel 3 fits 8x8 digits)."""
    iterations: int = 20_000
    """Total SGLD iterations T, burn-in included."""
    batch_size: int = 100
    """Teacher minibatch size."""
    step_size: float = 4e-6
    """SGLD step size eta (the initial one for the decaying schedules)."""
    schedule: StepSchedule = StepSchedule.constant
    """Step-size schedule: constant; polynomial eta_t = eta (1 + t / decay_t0)^-decay_gamma; or step,
    eta times decay_factor every decay_every iterations (as BDK's regression experiment)."""
    decay_t0: float = 1000.0
    """Polynomial schedule: time scale t0 in iterations."""
    decay_gamma: float = 0.55
    """Polynomial schedule: exponent gamma in (0.5, 1]."""
    decay_every: int = 100_000
    """Step schedule: iterations between decays (1..decay_every run at step_size)."""
    decay_factor: float = 0.5
    """Step schedule: factor in (0, 1] applied to the step size every decay_every iterations."""
    prior_precision: float = 10.0
    """Precision lambda of the isotropic Gaussian prior on all parameters (not divided by N)."""
    sampler: TeacherSampler = TeacherSampler.sgld
    """Update rule: sgld; psgld (RMSprop-preconditioned SGLD, Li et al. 2016, without its Gamma
    correction term, as the paper's experiments); or sgd (the same loop without noise: BDK's SGD
    baseline, one point estimate, no posterior)."""
    psgld_alpha: float = 0.99
    """pSGLD: decay alpha in (0, 1) of the running mean square of the minibatch gradient."""
    psgld_damping: float = 1e-5
    """pSGLD: damping delta > 0 in the preconditioner G = 1 / (delta + sqrt(V))."""
    init: TeacherInit = TeacherInit.default
    """The chains' initial weights: default (torch's layer defaults) or xavier_in (BDK's MXNet
    Xavier, uniform, fan-in, init_magnitude; biases 0)."""
    init_magnitude: float = 2.34
    """xavier_in: weights U(-s, s) with s = sqrt(init_magnitude / fan_in) (BDK: 2.34)."""
    burn_in: int = 1000
    """Iterations discarded before samples count and distillation starts."""
    thin: int = 100
    """Accumulate test-set posterior expectations every `thin` post-burn-in iterations."""
    chains: int = 1
    """Independent chains run side by side in one batched computation."""
    bank_size: int = 32
    """Thinned samples kept in the teacher artifact for `online` replay in search trials."""
    check_every: int = 1000
    """Iterations between divergence (NaN/inf) checks; the only host syncs in the loop."""
    cuda_graph: bool = False
    """Replay the SGLD step as a CUDA graph (CUDA, constant step size; falls back to eager)."""
    noise_thread: bool = False
    """CPU: draw each iteration's minibatch and noise ahead on a second thread (bitwise the same chain;
    faster when a second core is free). Ignored on CUDA."""
    checkpoint_every: int | None = None
    """Iterations between chain checkpoints (resume after a kill, extend later); None = every
    `checkpoint_seconds` of work; 0 = only the final state."""
    checkpoint_seconds: float = 300.0
    """With checkpoint_every None: seconds of sampling between chain checkpoints."""

    def __post_init__(self) -> None:
        check(
            len(self.widths) >= 1 and all(w >= 1 for w in self.widths),
            "teacher.widths must be positive",
        )
        check(self.iterations >= 1, "teacher.iterations must be >= 1")
        check(self.batch_size >= 1, "teacher.batch_size must be >= 1")
        check(self.step_size > 0, "teacher.step_size must be > 0")
        check(self.prior_precision >= 0, "teacher.prior_precision must be >= 0")
        check(0 <= self.burn_in < self.iterations, "teacher.burn_in must be in [0, iterations)")
        check(self.thin >= 1, "teacher.thin must be >= 1")
        check(self.chains >= 1, "teacher.chains must be >= 1")
        check(self.bank_size >= 1, "teacher.bank_size must be >= 1")
        check(self.check_every >= 1, "teacher.check_every must be >= 1")
        check(
            self.checkpoint_every is None or self.checkpoint_every >= 0,
            "teacher.checkpoint_every must be >= 0",
        )
        check(self.checkpoint_seconds > 0, "teacher.checkpoint_seconds must be > 0")
        check(
            self.decay_t0 > 0 and 0 < self.decay_gamma <= 1,
            "teacher decay_t0 > 0, 0 < decay_gamma <= 1",
        )
        check(self.decay_every >= 1, f"teacher.decay_every must be >= 1, got {self.decay_every}")
        check(0 < self.decay_factor <= 1, f"teacher.decay_factor must be in (0, 1], got {self.decay_factor}")
        check(0 < self.psgld_alpha < 1, f"teacher.psgld_alpha must be in (0, 1), got {self.psgld_alpha}")
        check(self.psgld_damping > 0, f"teacher.psgld_damping must be > 0, got {self.psgld_damping}")
        check(self.init_magnitude > 0, f"teacher.init_magnitude must be > 0, got {self.init_magnitude}")


RECIPE_DEFAULTS = {
    "data": {"pixel_divisor": 255.0},
    "distill": {"online_average": "none", "online_average_start": 0.5},
    "teacher": {
        "decay_every": 100_000,
        "decay_factor": 0.5,
        "sampler": "sgld",
        "psgld_alpha": 0.99,
        "psgld_damping": 1e-5,
        "init": "default",
        "init_magnitude": 2.34,
    },
}
"""Keys added after artifacts and chains already existed, at the value that reproduces the behaviour from
before they existed (their default, except distill.online_average, whose default is now polyak): a key
equal to its value here is dropped from the settings digests, so old artifacts keep their key."""


RENAMED_KEYS = {"distill": {"entropy_weight": "other_targets_weight"}}
"""Keys renamed after artifacts and chains already existed: section -> {old name: new name}. A study file
may still use the old name (read with a deprecation line), and the settings digests use the old name,
so an old artifact or chain keeps its key."""


def to_dict(cfg: Any) -> Any:
    """Plain YAML/JSON-able representation (enums as strings, tuples as lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, enum.Enum):
        return cfg.value
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


CHAIN_LENGTH_KEYS = (
    "cuda_graph",
    "noise_thread",
    "iterations",
    "check_every",
    "checkpoint_every",
    "checkpoint_seconds",
)
"""Teacher settings that change how long or how a chain runs, not the posterior it samples: left out of
the keys that identify a chain (so a chain can be extended and resumed under other check cadences)."""


def chain_settings(cfg) -> dict:
    """``to_dict(cfg)`` with the teacher section stripped of :data:`CHAIN_LENGTH_KEYS`, the recipe keys
    that equal their defaults (:data:`RECIPE_DEFAULTS`) left out and renamed keys under their old names
    (:data:`RENAMED_KEYS`)."""
    d = to_dict(cfg)
    d["teacher"] = {k: v for k, v in d["teacher"].items() if k not in CHAIN_LENGTH_KEYS}
    for section, defaults in RECIPE_DEFAULTS.items():  # keys added later, at their defaults: as before
        d[section] = {k: v for k, v in d[section].items() if not (k in defaults and v == defaults[k])}
    for section, names in RENAMED_KEYS.items():  # renamed keys: digested under their old names, as before
        old = {new: old for old, new in names.items()}
        d[section] = {old.get(k, k): v for k, v in d[section].items()}
    return d


def settings_digest(obj) -> str:
    """A short, stable digest of plain settings (sorted JSON, SHA-256, 16 hex digits)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
