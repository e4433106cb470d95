"""The Python API: from a :class:`StudyConfig` to a teacher, trained students and their records.

Data flow: config -> :func:`prepare` (data on the device, expectations) -> :func:`sample_teacher`
(SGLD, once per study) -> :func:`train_trial` (build -> distil with group LASSO -> prune ->
fine-tune -> evaluate quality and cost). :func:`distill_online` is the paper's online algorithm for one
student (the ``gped-search distill`` command).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from gped_search.config import (
    DistillConfig,
    PruneConfig,
    StudentConfig,
    StudyConfig,
)
from gped_search.data import DataBundle, make_bundle
from gped_search.distill.loop import (
    TeacherResult,
    accumulate_gradients,
    run_teacher,
    student_diverged,
    train_student,
    train_students,
)
from gped_search.distill.student import StudentTrainer
from gped_search.metrics.cost import cost_figures, measure_latency
from gped_search.metrics.quality import evaluate, student_outputs
from gped_search.metrics.uncertainty import downstream_record
from gped_search.models import Arch, Net, build, student_arch, teacher_arch
from gped_search.posterior.expectations import Expectation, resolve, tempered
from gped_search.prune import GRAD_METHODS, REG_METHODS, group_lasso_penalty, prune_model, regulariser, unit_groups
from gped_search.prune.methods import round_ratio
from gped_search.quant.deploy import check_study, needs_onnx
from gped_search.seeds import derive_seed
from gped_search.seeds import trial_seed as _trial_seed

__all__ = [
    "resolve_device",
    "trial_seed",
    "Prepared",
    "prepare",
    "teacher_arch_for",
    "student_arch_for",
    "make_trainer",
    "sample_teacher",
    "student_steps",
    "prune_and_finetune",
    "student_record",
    "train_trial",
    "train_trials",
]


def resolve_device(name: str = "auto") -> torch.device:
    """Resolve the device once, at the edge; everything after reads it from tensors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available (use device: auto or cpu)")
    return torch.device(name)


def trial_seed(study_seed: int, number: int) -> int:
    """A per-trial seed derived from (study seed, trial number)."""
    return _trial_seed(study_seed, number)


@dataclass
class Prepared:
    cfg: StudyConfig
    bundle: DataBundle
    exps: tuple[Expectation, ...]
    device: torch.device


def prepare(cfg: StudyConfig, device: str | torch.device | None = None) -> Prepared:
    dev = torch.device(device) if device is not None else resolve_device(cfg.device)
    check_study(cfg)  # int8 / ONNX Runtime latency without onnxruntime: one line, before any data or teacher
    exps = tempered(resolve(cfg.distill.targets, cfg.distill.plugins), cfg.distill.temperature)
    return Prepared(cfg, make_bundle(cfg.data, cfg.seed, dev), exps, dev)


def teacher_arch_for(p: Prepared) -> Arch:
    t = p.cfg.teacher
    arch = teacher_arch(t.arch.value, p.bundle.in_shape, p.bundle.n_classes, t.widths, t.kernel, t.padding)
    return replace(arch, input_scale=p.cfg.data.input_scale)


def student_arch_for(p: Prepared, s: StudentConfig) -> Arch:
    t = p.cfg.teacher
    heads = tuple((e.name, e.out_dim(p.bundle.n_classes)) for e in p.exps)
    linear = tuple(e.name for e in p.exps if e.name != "predictive" and not e.positive)
    cnn_kind = t.arch.value if t.arch.value != "mlp" else "cnn"
    arch = student_arch(
        s.family.value,
        p.bundle.in_shape,
        p.bundle.n_classes,
        heads,
        s.widths,
        s.m1,
        s.m2,
        teacher_cnn=cnn_kind,
        kernel=t.kernel,
        padding=t.padding,
        dropout=s.dropout,
        linear_heads=linear,
        temperature=p.cfg.distill.temperature,
    )
    return replace(arch, input_scale=p.cfg.data.input_scale)


def make_trainer(
    model: Net,
    p: Prepared,
    dcfg: DistillConfig,
    lambda_g: float = 0.0,
    lr: float | None = None,
    *,
    prune: PruneConfig | None = None,
) -> StudentTrainer:
    """A student trainer; with ``lambda_g > 0`` the group-LASSO penalty over Torch-Pruning's groups.

    With ``prune``, its method decides: group_lasso's ``lambda_g`` penalty, Torch-Pruning's
    regulariser for group_norm / growing_reg (``prune.reg``), nothing for the one-shot criteria.
    """
    penalty = hook = None
    if prune is not None:
        lambda_g = prune.lambda_g if prune.method.value == "group_lasso" else 0.0
        if prune.method.value in REG_METHODS and prune.reg > 0:
            hook = regulariser(model, p.bundle.test.x[:1], prune.method.value, prune.reg, prune.delta_reg)
    if lambda_g > 0:
        groups = unit_groups(model, p.bundle.test.x[:1])
        penalty = lambda: group_lasso_penalty(groups)  # noqa: E731
    return StudentTrainer(model, p.exps, dcfg, lr=lr, penalty=penalty, penalty_weight=lambda_g, grad_hook=hook)


def sample_teacher(
    p: Prepared,
    students: tuple[StudentTrainer, ...] = (),
    progress: bool = True,
    *,
    cache_transfer: bool = True,
    checkpoint_dir: str | Path | None = None,
    key: str = "",
    restart: bool = False,
) -> TeacherResult:
    """Run the study's SGLD chain(s); with ``cache_transfer`` accumulates transfer-set means for ``cached``
    trials over the same thinned iterates as the test means. With ``checkpoint_dir`` the chain is
    checkpointed there and resumed or extended from it (see :func:`run_teacher`)."""
    c = p.cfg
    return run_teacher(
        c.teacher,
        c.distill,
        c.data,
        p.bundle,
        teacher_arch_for(p),
        p.exps,
        seed=c.seed,
        students=students,
        cache_transfer=cache_transfer,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        checkpoint_key=key,
        restart=restart,
    )


def student_steps(cfg: StudyConfig) -> int:
    """Student steps of an artifact-trained student: distill.steps, else as many as the online run."""
    if cfg.distill.steps is not None:
        return cfg.distill.steps
    return max(1, (cfg.teacher.iterations - cfg.teacher.burn_in) // cfg.distill.every)


def _widths(model: Net) -> list[int]:
    layers = (lay for lay in model.body if isinstance(lay, (torch.nn.Linear, torch.nn.Conv2d)))
    return [m.out_features if isinstance(m, torch.nn.Linear) else m.out_channels for m in layers]


def _finetune_split(prune: PruneConfig) -> list[int]:
    """Fine-tuning steps after each round: ``finetune_steps`` shared out, the remainder first."""
    n, r = divmod(prune.finetune_steps, prune.rounds)
    return [n + (1 if i < r else 0) for i in range(prune.rounds)]


def _prune_round(
    model: Net, p: Prepared, prune: PruneConfig, r: int, info: dict | None, teacher: TeacherResult, seed: int
) -> dict:
    """Round ``r`` (0-based) of ``prune``'s schedule on ``model``; returns the pruning record so far.

    Round r of R keeps ``budget ** ((r+1)/R)`` of the original parameters (budget rule) or removes
    the per-round fraction ``1 - (1 - ratio) ** (1/R)`` of each layer's units (ratio rule), so the
    last round lands on the requested size.
    """
    before = _widths(model)
    params0 = info["params_before"] if info else sum(q.numel() for q in model.parameters())
    method = prune.method.value
    if method in GRAD_METHODS:
        grads = make_trainer(model, p, p.cfg.distill)  # the penalty-free distillation loss
        accumulate_gradients(
            grads,
            teacher,
            p.bundle.transfer,
            prune.taylor_batches,
            p.cfg.distill,
            p.cfg.data,
            seed=seed,
            index=r,
        )
    res = prune_model(
        model,
        p.bundle.test.x[:1],
        prune.rule.value,
        tau=prune.tau,
        ratio=round_ratio(prune.ratio, prune.rounds),
        method=method,
        budget=prune.budget,
        target_params=params0 * prune.budget ** ((r + 1) / prune.rounds),
        norm=prune.norm,
    )
    model.zero_grad(set_to_none=True)
    steps = _finetune_split(prune)[r] if sum(res.removed) > 0 or info else 0
    if info is None:
        info = {
            "method": method,
            "rule": prune.rule.value,
            "tau": prune.tau,
            "ratio": prune.ratio,
            "budget": prune.budget,
            "rounds": prune.rounds,
            "units_before": before,
            "units_removed": [0] * len(before),
            "history": [],
            "finetune_steps": 0,
            "params_before": res.params_before,
        }
    info["units_kept"] = res.kept
    info["units_removed"] = [a + b for a, b in zip(info["units_removed"], res.removed)]
    info["history"] = info["history"] + res.history
    info["params_after"] = res.params_after
    info["params_kept_fraction"] = res.params_after / info["params_before"]
    info["finetune_steps"] += steps
    info["_round_steps"] = steps
    return info


def prune_and_finetune(
    model: Net,
    teacher: TeacherResult,
    p: Prepared,
    prune: PruneConfig,
    dcfg: DistillConfig,
    seed: int,
    progress: bool = False,
) -> dict:
    """``prune.rounds`` times: prune (``prune.method`` and rule), then fine-tune by penalty-free
    distillation at a lower lr."""
    info = None
    for r in range(prune.rounds):
        info = _prune_round(model, p, prune, r, info, teacher, seed)
        steps = info.pop("_round_steps")
        if steps > 0:
            trainer = make_trainer(model, p, dcfg, lr=dcfg.lr * prune.finetune_lr_factor)
            train_student(
                trainer,
                teacher,
                p.bundle.transfer,
                steps,
                dcfg,
                p.cfg.data,
                seed=derive_seed(seed, "fine-tune") if r == 0 else derive_seed(seed, "fine-tune-round", r),
                progress=progress,
                desc="fine-tune",
            )
    return info


def _quality(
    model: Net,
    x: torch.Tensor,
    y: torch.Tensor,
    means: dict,
    teacher: TeacherResult,
    s_ood: dict | None,
    student_only_ood: bool = False,
) -> dict:
    s = student_outputs(model, x)
    rec = evaluate(model, x, y, means, outputs=s)
    t_ood = teacher.ood if s_ood is not None and not student_only_ood else None
    rec.update(downstream_record(means, s, y, t_ood, s_ood, student_only_ood=student_only_ood))
    return rec


ROBUST_METRICS = ("robust_acc", "robust_error")


def _robustness(model: Net, p: Prepared) -> dict:
    """PGD accuracy (``search.robust_eps``, ``robust_steps``) on the first ``robust_n`` images of the
    selection split (``robust_acc``, ``robust_error``) and the test split (``test_...``), when an
    objective or constraint of the study names one of them; else nothing."""
    s = p.cfg.search
    if not any(m in s.objectives or m in s.constraints for m in ROBUST_METRICS):
        return {}
    from gped_search.metrics.adversarial import attack, student_probs_fn

    probs = student_probs_fn(model.eval())
    out = {}
    splits = [("test_", p.bundle.test)] + ([("", p.bundle.val)] if p.bundle.val is not None else [])
    for prefix, split in splits:
        x, y = split.x[: s.robust_n], split.y[: s.robust_n]
        xa = attack("pgd", probs, x, y, s.robust_eps, steps=s.robust_steps, seed=p.cfg.seed)
        with torch.no_grad():
            acc = float((probs(xa).argmax(1) == y).float().mean())
        out[f"{prefix}robust_acc"], out[f"{prefix}robust_error"] = acc, 1.0 - acc
    if p.bundle.val is None:
        out["robust_acc"], out["robust_error"] = out["test_robust_acc"], out["test_robust_error"]
    return out


def _scores(model, teacher: TeacherResult, p: Prepared) -> dict:
    """Quality metrics on the selection split and (``test_``) the test set; ``model`` may be an ONNX session."""
    b = p.bundle
    s_ood = student_outputs(model, b.ood.x) if b.ood is not None and teacher.ood is not None else None
    test = _quality(model, b.test.x, b.test.y, teacher.test, teacher, s_ood)
    if b.val is not None and teacher.val is not None:
        # ood_auroc (selection) on OOD images test_ood_auroc never sees: the OOD dataset's training images
        s_val_ood = student_outputs(model, b.val_ood.x) if b.val_ood is not None and s_ood is not None else None
        rec = _quality(model, b.val.x, b.val.y, teacher.val, teacher, s_val_ood, student_only_ood=True)
        rec["selection_split"] = "validation"
    else:
        rec = dict(test)
        rec["selection_split"] = "test"
    rec.update({f"test_{k}": v for k, v in test.items()})
    return rec


def student_record(
    model: Net,
    teacher: TeacherResult,
    p: Prepared,
    latency_batch: int = 1,
    latency_repeats: int = 30,
    precision: str = "fp32",
) -> dict:
    """Quality against the teacher, plus cost figures and measured latency.

    When the study may quantize or times in ONNX Runtime, the student is also written as ONNX
    (:func:`gped_search.quant.deploy.deployed_record`): an int8 trial's quality, ``bytes`` and
    latency are then the quantized model's in an ONNX Runtime session, its fp32 figures ``fp32_*``.

    With a validation split, the plain metric names (``kl``, ``student_acc``, ``ood_auroc``, ...)
    are measured on it, and are what objectives, constraints and fronts use; the same metrics on
    the test set are recorded as ``test_<metric>`` for reporting only. Without one
    (``data.validation: 0``), both are the test set's and ``selection_split`` says ``test``.
    """
    b = p.bundle
    rec = _scores(model, teacher, p)
    rec.update(_robustness(model, p))
    cost = cost_figures(model, b.test.x[:1])
    lat = measure_latency(
        model,
        b.in_shape,
        batch=latency_batch,
        device=str(p.device),
        threads=1 if p.device.type == "cpu" else None,
        repeats=latency_repeats,
        warmup=5,
    )
    rec.update({k: v for k, v in cost.items() if isinstance(v, (int, float))})
    rec.update(
        {
            "latency_ms": lat["median_ms"],
            "latency_p10_ms": lat["p10_ms"],
            "latency_p90_ms": lat["p90_ms"],
            "latency_batch": lat["batch"],
            "latency_device": str(lat["device"]),
        }
    )
    rec["bytes"] = rec["bytes_fp32"]
    if needs_onnx(p.cfg):
        from gped_search.quant.deploy import deployed_record

        score = lambda m: _scores(m, teacher, p)  # noqa: E731
        rec.update(deployed_record(model, p.cfg, b.transfer, precision, rec, score, latency_batch, latency_repeats))
    arch = model.arch
    rec["arch"] = arch.describe()
    for i, w in enumerate(arch.channels):
        rec[f"channels_{i}"] = w
    for i, w in enumerate(arch.hidden):
        rec[f"hidden_{i}"] = w
    return rec


def _finish_record(
    model: Net,
    teacher: TeacherResult,
    p: Prepared,
    prune: PruneConfig,
    pruning: dict | None,
    steps: int,
    latency_batch: int,
    precision: str = "fp32",
) -> dict:
    rec = student_record(model, teacher, p, latency_batch, precision=precision)
    rec.update(
        {
            "student_steps": steps,
            "lambda_g": prune.lambda_g,
            "prune_method": prune.method.value,
            "units_removed": sum(pruning["units_removed"]) if pruning else 0,
            "params_kept_fraction": pruning["params_kept_fraction"] if pruning else 1.0,
        }
    )
    rec["_pruning"] = pruning
    return rec


def train_trial(
    p: Prepared,
    teacher: TeacherResult,
    student: StudentConfig,
    prune: PruneConfig,
    *,
    seed: int,
    steps: int | None = None,
    latency_batch: int = 1,
    progress: bool = False,
    data_seed: int | None = None,
) -> tuple[Net, dict]:
    """One search trial's student: build -> distil (+ group LASSO) -> prune -> fine-tune -> record.

    ``seed`` sets the initial weights; ``data_seed`` (default ``seed``) the transfer minibatch and
    target stream. Both are recorded, so a trial of a lockstep batch (whose stream came from the
    batch's first seed) is reproduced by ``train_trial(..., seed=seed, data_seed=data_seed)``.
    """
    data_seed = seed if data_seed is None else data_seed
    torch.manual_seed(seed)
    model = build(student_arch_for(p, student)).to(p.device)
    trainer = make_trainer(model, p, p.cfg.distill, prune=prune)
    steps = steps or student_steps(p.cfg)
    t0 = time.perf_counter()
    timing = train_student(
        trainer,
        teacher,
        p.bundle.transfer,
        steps,
        p.cfg.distill,
        p.cfg.data,
        seed=data_seed,
        progress=progress,
    )
    pruning = prune_and_finetune(model, teacher, p, prune, p.cfg.distill, data_seed, progress) if prune.active else None
    rec = _finish_record(model, teacher, p, prune, pruning, timing["steps"], latency_batch, student.precision.value)
    rec["train_seconds"] = time.perf_counter() - t0
    rec["data_seed"] = data_seed
    rec["_curve"] = list(trainer.curve)
    return model, rec


def train_trials(
    p: Prepared,
    teacher: TeacherResult,
    configs: list[StudyConfig],
    seeds: list[int],
    *,
    steps: int | None = None,
    latency_batch: int = 1,
    progress: bool = False,
) -> list[tuple[Net, dict] | Exception]:
    """Several trials' students trained in lockstep against one teacher (the search's batch mode).

    Each config is one trial's study config (its student, prune and distill choices; data, targets and
    step counts are the study's). Students are initialised from their own seeds as in
    :func:`train_trial`, then share one minibatch stream (drawn from ``seeds[0]``), one target
    computation and one backward per step (:func:`train_students`); pruned students are fine-tuned
    together the same way. Returns, per trial, ``(model, record)`` or the exception that ended it
    (a diverging student fails alone). ``train_seconds`` is a student's share of the lockstep time
    (batch wall time / students) plus its own pruning and evaluation.
    """
    batch = _Batch(p, teacher, list(configs), list(seeds), steps or student_steps(p.cfg), progress)
    batch.build()
    if batch.trainers:
        batch.lockstep(list(batch.trainers), batch.trainers, batch.steps, seeds[0], f"{len(batch.trainers)} students")
    batch.prune_all()
    return batch.records(latency_batch)


@dataclass
class _Batch:
    """One lockstep batch of trials: per trial its model, trainer, pruning and time, or the error that ended it."""

    p: Prepared
    teacher: TeacherResult
    configs: list[StudyConfig]
    seeds: list[int]
    steps: int
    progress: bool

    def __post_init__(self) -> None:
        self.out: list = [None] * len(self.configs)
        self.models: dict[int, Net] = {}
        self.trainers: dict = {}
        self.pruning: dict[int, dict] = {}
        self.shared: dict[int, float] = {}
        self.own: dict[int, float] = {}

    def fail(self, i: int, e: Exception) -> None:
        self.out[i] = e
        self.models.pop(i, None)

    def build(self) -> None:
        for i, (c, seed) in enumerate(zip(self.configs, self.seeds)):
            try:
                torch.manual_seed(seed)
                self.models[i] = build(student_arch_for(self.p, c.student)).to(self.p.device)
                self.trainers[i] = make_trainer(self.models[i], self.p, c.distill, prune=c.prune)
            except Exception as e:  # noqa: BLE001 - one trial's failure, recorded by the caller
                self.fail(i, e)
        self.shared = {i: 0.0 for i in self.models}
        self.own = {i: 0.0 for i in self.models}

    def lockstep(self, ids: list[int], group: dict, n: int, seed: int, desc: str) -> None:
        """Train ``group``'s students together for ``n`` steps; each is charged an equal share of the time."""
        t0 = time.perf_counter()
        res = train_students(
            [group[i] for i in ids],
            self.teacher,
            self.p.bundle.transfer,
            n,
            self.p.cfg.distill,
            self.p.cfg.data,
            seed=seed,
            progress=self.progress,
            desc=desc,
            leave=False,
        )
        for i in ids:
            self.shared[i] += (time.perf_counter() - t0) / len(ids)
        for j, step in res["diverged"].items():
            self.fail(ids[j], student_diverged(step))

    def prune_all(self) -> None:
        """Every pruning trial's schedule, round by round: prune each, then fine-tune those of a round
        with the same number of steps together."""
        ids = [i for i in self.models if self.configs[i].prune.active]
        for r in range(max((self.configs[i].prune.rounds for i in ids), default=0)):
            by_steps: dict[int, list[int]] = {}
            for i in ids:
                prune = self.configs[i].prune
                if i not in self.models or r >= prune.rounds:
                    continue
                t0 = time.perf_counter()
                try:
                    info = _prune_round(
                        self.models[i], self.p, prune, r, self.pruning.get(i), self.teacher, self.seeds[0]
                    )
                except Exception as e:  # noqa: BLE001
                    self.fail(i, e)
                    continue
                finally:
                    self.own[i] = self.own.get(i, 0.0) + time.perf_counter() - t0
                self.pruning[i] = info
                steps = info.pop("_round_steps")
                if steps > 0:
                    by_steps.setdefault(steps, []).append(i)
            for n, group in by_steps.items():
                fine = {
                    i: make_trainer(
                        self.models[i],
                        self.p,
                        self.configs[i].distill,
                        lr=self.configs[i].distill.lr * self.configs[i].prune.finetune_lr_factor,
                    )
                    for i in group
                }
                seed0 = self.seeds[0]
                seed = derive_seed(seed0, "fine-tune") if r == 0 else derive_seed(seed0, "fine-tune-round", r)
                self.lockstep(group, fine, n, seed, "fine-tune")

    def records(self, latency_batch: int) -> list:
        for i in list(self.models):
            t0 = time.perf_counter()
            try:
                rec = _finish_record(
                    self.models[i],
                    self.teacher,
                    self.p,
                    self.configs[i].prune,
                    self.pruning.get(i),
                    self.steps,
                    latency_batch,
                    self.configs[i].student.precision.value,
                )
            except Exception as e:  # noqa: BLE001
                self.out[i] = e
                continue
            rec["train_seconds"] = self.shared[i] + self.own[i] + time.perf_counter() - t0
            rec["batch_students"] = len(self.configs)
            rec["data_seed"] = self.seeds[0]  # the batch's shared minibatch stream (see train_trial's data_seed)
            rec["_curve"] = list(self.trainers[i].curve)
            self.out[i] = (self.models[i], rec)
        return self.out
