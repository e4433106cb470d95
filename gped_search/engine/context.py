"""The engine's context: the device, the prepared data (:class:`Prepared`), teacher and student
architectures, the student trainer factory and the study's teacher chain."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from gped_search.config import DistillConfig, PruneConfig, StudentConfig, StudyConfig
from gped_search.data import DataBundle, make_bundle
from gped_search.distill.loop import TeacherResult, run_teacher
from gped_search.distill.student import StudentTrainer
from gped_search.models import Arch, Net, student_arch, teacher_arch
from gped_search.posterior.expectations import Expectation, resolve, tempered
from gped_search.prune import REG_METHODS, group_lasso_penalty, regulariser, unit_groups
from gped_search.quant.deploy import check_study
from gped_search.seeds import trial_seed

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
]


def resolve_device(name: str = "auto") -> torch.device:
    """Resolve the device once, at the edge; everything after reads it from tensors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available (use device: auto or cpu)")
    return torch.device(name)


@dataclass
class Prepared:
    """A study's config with its data on the device and its (tempered) expectations."""

    cfg: StudyConfig
    bundle: DataBundle
    exps: tuple[Expectation, ...]
    device: torch.device


def prepare(cfg: StudyConfig, device: str | torch.device | None = None) -> Prepared:
    """Load the study's data onto its device (``device`` overrides ``cfg.device``)."""
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
    unit = tuple(e.name for e in p.exps if e.range == "unit")  # declared in [0, 1]: a sigmoid head
    return replace(arch, input_scale=p.cfg.data.input_scale, unit_heads=unit)


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

    With ``prune`` instead, its method decides: group_lasso's ``prune.lambda_g`` penalty,
    Torch-Pruning's regulariser for group_norm / growing_reg (``prune.reg``), nothing for the
    one-shot criteria. Passing both ``lambda_g`` and ``prune`` is an error.
    """
    penalty = hook = None
    if prune is not None:
        if lambda_g:
            raise ValueError("make_trainer: pass lambda_g or prune, not both (prune's method decides the penalty)")
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
