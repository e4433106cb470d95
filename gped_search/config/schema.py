"""The study's settings as typed, frozen, validated dataclasses (the schema of a study file).

Every section is a frozen dataclass whose ``__post_init__`` range-checks its values; reading YAML,
``--set`` overrides and type coercion are :mod:`gped_search.config.loading`; the package
:mod:`gped_search.config` re-exports all of this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gped_search.errors import ConfigError

__all__ = [
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
    "chain_settings",
    "settings_digest",
    "to_dict",
]

from gped_search.choices import (
    EntropyLoss,
    LatencyBackend,
    Precision,
    PruneMethod,
    PruneRule,
    SearchStrategy,
    StudentFamily,
    TargetMode,
)

from .metric_names import check_metric  # noqa: E402
from .schema_chain import (  # noqa: E402  (re-exported)
    CHAIN_LENGTH_KEYS,
    DataConfig,
    TeacherConfig,
    chain_settings,
    check,
    settings_digest,
    to_dict,
)
from .schema_strategy import HalvingConfig, SupernetConfig  # noqa: E402  (re-exported)
from .space import check_grid_size, grid_space, parse_space, precisions  # noqa: E402


@dataclass(frozen=True)
class StudentConfig:
    family: StudentFamily = StudentFamily.mlp
    """Student family: mlp (any number of hidden widths) or cnn (teacher CNN scaled by m1, m2)."""
    widths: tuple[int, ...] = (400, 400)
    """Hidden widths of an MLP student."""
    m1: float = 1.0
    """CNN student: multiplication factor of every conv layer's channel count."""
    m2: float = 1.0
    """CNN student: multiplication factor of every fully connected hidden width."""
    dropout: float = 0.0
    """Dropout on hidden layers during training (off in eval mode); the reference uses 0.5."""
    precision: Precision = Precision.fp32
    """fp32 | int8: the student as deployed (int8: ONNX Runtime quantization; needs gped-search[onnx])."""
    calibration_size: int = 256
    """int8 CNN students: transfer-set inputs (evenly spaced) that calibrate static quantization."""

    def __post_init__(self) -> None:
        check(
            len(self.widths) >= 1 and all(w >= 1 for w in self.widths),
            "student.widths must be positive",
        )
        check(self.m1 > 0 and self.m2 > 0, "student.m1 and student.m2 must be > 0")
        check(0 <= self.dropout < 1, "student.dropout must be in [0, 1)")
        check(self.calibration_size >= 1, "student.calibration_size must be >= 1")


@dataclass(frozen=True)
class DistillConfig:
    targets: tuple[str, ...] = ("predictive", "expected_entropy")
    """Posterior expectations to distil, by registered name; `predictive` must be first."""
    target_mode: TargetMode = TargetMode.cached
    """cached: the teacher artifact's posterior means on the transfer set; online: the current sample of
    the live chain (the paper's algorithm); running_mean: per-example running mean. The default is cached
    because 47 of the 49 shipped studies use it (search trials train from the finished teacher); set
    online for the paper's algorithm (``gped-search distill``). Every shipped study names its mode, and
    the mode is part of the settings a distill run's key digests (the teacher's key leaves it out), so
    the default changed no shipped study, artifact or chain key."""
    every: int = 100
    """H: one student step every H teacher iterations after burn-in (online modes)."""
    transfer_batch: int = 100
    """Transfer minibatch size (drawn with replacement)."""
    steps: int | None = None
    """Student steps for artifact-based (search) training; None = (iterations - burn_in) / every."""
    lr: float = 1e-3
    """Adam learning rate."""
    lr_step: int = 2000
    """StepLR period in student steps (not teacher epochs, unlike the reference)."""
    lr_gamma: float = 0.5
    """StepLR factor."""
    entropy_loss: EntropyLoss = EntropyLoss.l2
    """Loss for scalar expectations such as the expected entropy: l2 (minimised by the posterior mean)
    or l1 (the reference's; it fits the median, so only with cached mean targets)."""
    other_targets_weight: float = 1.0
    """Weight of the loss of every target other than the predictive (the expected entropy and any registered
    expectation). Formerly ``entropy_weight``, still read with a deprecation line."""
    temperature: float = 1.0
    """Softmax temperature for the predictive target and student (1 = none)."""
    plugins: tuple[str, ...] = ()
    """Python modules imported before targets are resolved (to register custom expectations)."""
    derivative_weight: float = 0.0
    """Derivative matching (0 = off): weight of the squared error of the predictive's directional input
    derivatives, student vs the posterior mean over the teacher's sample bank (random unit directions)."""
    derivative_directions: int = 1
    """Random directions per transfer input and step for derivative matching."""
    derivative_samples: int | None = None
    """Bank samples averaged per step for the teacher's derivative (None = the whole bank; fewer = a random
    subset each step, an unbiased and cheaper estimate of the posterior mean's derivative)."""
    relational_weight: float = 0.0
    """Relational distillation (0 = off): weight of the squared error of the minibatch's cosine-similarity
    graph of predictive probabilities, student vs teacher."""
    transfer_size: int | None = None
    """Students see only the first k transfer images (None = all): distillation with scarce transfer data."""
    online_average: str = "polyak"
    """Online modes of ``gped-search distill``: polyak (default: the equal-weight average of the student's
    weights over its online steps from online_average_start on; on digits it cut the validation KL by
    40 % on 3 of 3 seeds, reports/online_bias) or none (the paper's algorithm: the last student)."""
    online_average_start: float = 0.5
    """polyak: fraction of the run's online student steps after which the average starts, in [0, 1)."""

    def __post_init__(self) -> None:
        check(
            len(self.targets) >= 1 and self.targets[0] == "predictive",
            "distill.targets must start with 'predictive'",
        )
        check(len(set(self.targets)) == len(self.targets), "distill.targets has duplicates")
        check(
            self.every >= 1 and self.transfer_batch >= 1,
            "distill.every and transfer_batch must be >= 1",
        )
        check(self.steps is None or self.steps >= 1, "distill.steps must be >= 1")
        check(
            self.online_average in ("none", "polyak"),
            f"distill.online_average must be none or polyak, got {self.online_average!r}",
        )
        check(0 <= self.online_average_start < 1, "distill.online_average_start must be in [0, 1)")
        check(
            self.derivative_weight >= 0 and self.relational_weight >= 0,
            "distill.derivative_weight and distill.relational_weight must be >= 0",
        )
        check(self.derivative_directions >= 1, "distill.derivative_directions must be >= 1")
        check(
            self.derivative_samples is None or self.derivative_samples >= 1, "distill.derivative_samples must be >= 1"
        )
        check(self.transfer_size is None or self.transfer_size >= 1, "distill.transfer_size must be >= 1")
        check(
            self.lr > 0 and self.lr_step >= 1 and 0 < self.lr_gamma <= 1,
            "distill lr/lr_step/lr_gamma out of range",
        )
        check(
            self.other_targets_weight >= 0 and self.temperature > 0,
            "distill.other_targets_weight must be >= 0 and distill.temperature > 0",
        )
        check(
            self.entropy_loss == EntropyLoss.l2 or self.target_mode == TargetMode.cached,
            f"distill.entropy_loss: l1 with target_mode {getattr(self.target_mode, 'value', self.target_mode)} "
            f"fits the posterior median of single-sample targets, not their mean; use l2 (or target_mode cached)",
        )


@dataclass(frozen=True)
class PruneConfig:
    method: PruneMethod = PruneMethod.group_lasso
    """How units are chosen: group_lasso (lambda_g penalty while distilling, the paper's), magnitude or
    taylor (Torch-Pruning's group importance, one-shot after plain distillation), group_norm or
    growing_reg (Torch-Pruning's GroupNormPruner / GrowingRegPruner regulariser while distilling,
    then group magnitude)."""
    lambda_g: float = 0.0
    """Group-LASSO strength (0 = off): lambda_g * sum over groups of ||w_group||_2 (method group_lasso)."""
    rule: PruneRule = PruneRule.threshold
    """threshold: prune groups whose norm <= tau (group_lasso only); ratio: a fraction of units per layer;
    budget: the same fraction in every layer, chosen so the student keeps `budget` of its parameters."""
    tau: float = 1e-3
    """Threshold on a unit's group norm."""
    ratio: float = 0.5
    """Fraction of units per layer to prune under the ratio rule."""
    budget: float = 0.5
    """Fraction of the student's parameters kept under the budget rule (the nearest achievable count)."""
    reg: float = 1e-4
    """Regulariser strength of group_norm / growing_reg (Torch-Pruning's `reg`)."""
    delta_reg: float = 1e-5
    """growing_reg: per-update growth of the regulariser of unimportant groups (every 10 steps)."""
    rounds: int = 1
    """Iterative schedule: prune -> fine-tune this many times (keep fraction budget**(r/rounds) or
    ratio split likewise; the fine-tuning steps are shared out over the rounds)."""
    norm: int = 2
    """magnitude: the group norm that ranks units (1 or 2)."""
    taylor_batches: int = 16
    """taylor: transfer minibatches whose distillation-loss gradients score the units."""
    finetune_steps: int = 0
    """Student steps of fine-tuning (distillation without the penalty) after pruning."""
    finetune_lr_factor: float = 0.1
    """Fine-tuning learning rate = distill.lr * this factor."""

    def __post_init__(self) -> None:
        check(self.lambda_g >= 0, "prune.lambda_g must be >= 0")
        check(self.tau >= 0, "prune.tau must be >= 0")
        check(0 <= self.ratio < 1, "prune.ratio must be in [0, 1)")
        check(0 < self.budget <= 1, "prune.budget must be in (0, 1]")
        check(self.reg >= 0 and self.delta_reg >= 0, "prune.reg and prune.delta_reg must be >= 0")
        check(self.rounds >= 1, "prune.rounds must be >= 1")
        check(self.taylor_batches >= 1, "prune.taylor_batches must be >= 1")
        check(self.norm in (1, 2), "prune.norm must be 1 or 2")
        check(self.finetune_steps >= 0, "prune.finetune_steps must be >= 0")
        check(self.finetune_lr_factor > 0, "prune.finetune_lr_factor must be > 0")
        check(
            self.method == PruneMethod.group_lasso or self.rule != PruneRule.threshold,
            f"prune.rule threshold needs prune.method group_lasso (method "
            f"{getattr(self.method, 'value', self.method)} ranks units: use rule budget or ratio)",
        )
        check(
            self.rounds == 1 or self.rule != PruneRule.threshold,
            "prune.rounds > 1 needs prune.rule budget or ratio (a threshold has no intermediate steps)",
        )

    @property
    def active(self) -> bool:
        """Whether a trial with these settings prunes at all."""
        return self.method != PruneMethod.group_lasso or self.lambda_g > 0 or self.rule != PruneRule.threshold


@dataclass(frozen=True)
class SearchConfig:
    space: dict[str, Any] = field(default_factory=dict)
    """Search space: parameter name -> distribution spec (see search.space)."""
    objectives: dict[str, str] = field(default_factory=lambda: {"kl": "minimize", "bytes_fp32": "minimize"})
    """Objective metric name -> minimize | maximize."""
    constraints: dict[str, float] = field(default_factory=dict)
    """Metric name -> upper bound (feasible when metric <= bound)."""
    sampler: str = "tpe"
    """tpe | nsga2 | random | grid | qmc (scrambled Sobol: space-filling, for small budgets) | gp
    (Optuna's Gaussian-process sampler)."""
    n_startup_trials: int | None = None
    """tpe and gp: random trials before the model is used (None = n_trials // 2, between 2 and 10)."""
    n_trials: int | None = 8
    """Trials to run (None = until timeout)."""
    timeout: float | None = None
    """Seconds to run (None = until n_trials)."""
    storage: str | None = None
    """Optuna storage URL; default: SQLite file in the study's report folder."""
    artifacts: str | None = None
    """Object store for the teacher, chain and student files (s3://bucket/prefix or file:///folder); none: the
    report folder only. Credentials and endpoint come from the AWS environment/config, never from here."""
    latency_batch: int = 1
    """Batch size of the latency objective."""
    robust_eps: float = 0.1
    """L-infinity radius (pixels in [0, 1]) of the PGD attack behind the robust_acc / robust_error metrics."""
    robust_steps: int = 10
    """PGD steps of robust_acc (computed only when an objective or constraint names it)."""
    robust_n: int = 1000
    """Images of the selection (and test) split attacked for robust_acc (the first n)."""
    batch: int = 1
    """Trials asked together and trained in lockstep against the teacher (ask-and-tell batch mode)."""
    latency_backend: LatencyBackend = LatencyBackend.torch
    """torch (eager PyTorch) | onnxruntime (every trial timed as an ONNX Runtime session; int8 always is)."""
    strategy: SearchStrategy = SearchStrategy.trials
    """trials (every trial distils its student from scratch) | supernet (one weight-sharing student scores
    the space; only its front is extracted and fine-tuned) | halving (successive halving in lockstep)."""
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    halving: HalvingConfig = field(default_factory=HalvingConfig)
    interim_images: int = 2000
    """Selection-split images that score students before their trials end (a supernet's slices, halving's
    rungs): the first N (0 = all). Trials that end are scored on the whole split."""
    seed: int | None = None
    """Seed of the search: the sampler and every trial's student seeds (None = the study seed). The
    teacher depends on the study ``seed`` only, so studies that differ in ``search.seed`` share it."""

    def __post_init__(self) -> None:
        check(0 < self.robust_eps <= 1, "search.robust_eps must be in (0, 1]")
        check(self.robust_steps >= 1 and self.robust_n >= 1, "search.robust_steps and search.robust_n must be >= 1")
        check(
            self.sampler in {"tpe", "nsga2", "random", "grid", "qmc", "gp"},
            f"search.sampler must be tpe|nsga2|random|grid|qmc|gp, got {self.sampler!r}",
        )
        check(
            self.n_startup_trials is None or self.n_startup_trials >= 1,
            f"search.n_startup_trials must be >= 1, got {self.n_startup_trials}",
        )
        check(len(self.objectives) >= 1, "search.objectives must name at least one objective")
        for k, v in self.objectives.items():
            check(v in {"minimize", "maximize"}, f"search.objectives.{k} must be minimize or maximize")
        check(self.n_trials is None or self.n_trials >= 1, "search.n_trials must be >= 1")
        check(self.timeout is None or self.timeout > 0, "search.timeout must be > 0")
        check(self.latency_batch >= 1, "search.latency_batch must be >= 1")
        check(self.batch >= 1, "search.batch must be >= 1")
        check(self.interim_images >= 0, f"search.interim_images must be >= 0, got {self.interim_images}")
        check(
            self.artifacts is None
            or (isinstance(self.artifacts, str) and self.artifacts.startswith(("s3://", "file:///"))),
            f"search.artifacts must be s3://bucket/prefix or file:///folder, got {self.artifacts!r}",
        )
        check(
            self.seed is None or (isinstance(self.seed, int) and self.seed >= 0),
            "search.seed must be a non-negative integer",
        )


@dataclass(frozen=True)
class StudyConfig:
    name: str = "quickstart"
    """Study name: the Optuna study name and the folder under reports/."""
    seed: int = 0
    """Study seed: the data split and the teacher chain; also the search's unless ``search.seed`` is set."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    report_dir: str = "reports"
    """Parent folder of the study's outputs (reports/<name>/)."""
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def __post_init__(self) -> None:
        check(
            bool(self.name) and "/" not in self.name and self.name not in (".", ".."),
            "name must be a non-empty name without '/' (and not '.' or '..')",
        )
        check(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "device must be auto, cpu, cuda or cuda:N",
        )
        specs = parse_space(self.search.space)
        for s in specs.values():
            vals = s.choices if s.choices is not None else (s.low, s.high, s.step)
            check(
                not any(isinstance(v, float) and not math.isfinite(v) for v in vals),
                f"search.space.{s.name}: numbers must be finite",
            )
        methods = specs["method"].values() if "method" in specs else [self.prune.method.value]
        rules = specs["rule"].values() if "rule" in specs else [self.prune.rule.value]
        check(
            not ("threshold" in rules and any(m != "group_lasso" for m in methods)),
            "search.space.method: methods other than group_lasso rank units and need prune.rule budget or "
            "ratio, but the study may use rule threshold (set prune.rule: budget)",
        )
        if self.search.sampler == "grid":
            check_grid_size(specs, len(self.student.widths))
            if not grid_space(specs, len(self.student.widths)):
                raise ConfigError("search.space: the grid sampler needs at least one parameter with several values")
        for k in self.search.objectives:
            check_metric(k, self.distill.targets, f"search.objectives.{k}")
        for k, v in self.search.constraints.items():
            check_metric(k, self.distill.targets, f"search.constraints.{k}")
            check(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                f"search.constraints.{k} must be a finite number (the upper bound)",
            )
        timed = any(k.startswith("latency") for k in (*self.search.objectives, *self.search.constraints))
        check(
            not (timed and {"fp32", "int8"} <= precisions(self) and self.search.latency_backend.value == "torch"),
            "search.latency_backend: int8 students run in ONNX Runtime, so a latency objective over fp32 "
            "and int8 needs search.latency_backend: onnxruntime",
        )

    @property
    def out_dir(self) -> Path:
        return Path(self.report_dir) / self.name
