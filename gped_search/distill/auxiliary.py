"""Auxiliary distillation losses: derivative matching and relational (graph) distillation.

**Derivative matching** (Papamakarios, "Distilling Model Knowledge", 2015): besides the values of
the teacher's posterior predictive p(y|x) = E_theta[softmax f_theta(x)], the student matches its
input derivatives. The full Jacobian (classes x pixels) is never formed: each step draws ``k``
random unit directions v per transfer input and matches directional derivatives J v, computed by
forward-mode AD (``torch.func.jvp``). The teacher's is the posterior mean of the samples'
derivatives, J_pbar v = (1/S) sum_s J_{p_s} v over the artifact's sample bank (``vmap`` over the
bank's parameters), an unbiased estimate of the posterior predictive's derivative with the bank's S
samples. Since E_v[(a - b)^T v v^T (a - b)] = ||a - b||^2 / D for unit v uniform on the sphere, the
loss is an unbiased estimate of the squared Frobenius distance of the Jacobians divided by D:
matching random projections matches the whole Jacobian in expectation.

**Relational distillation** (Lassance et al., "Deep geometric knowledge distillation with graphs",
2020): the student matches the similarity graph of the minibatch, G_ij = cos(z_i, z_j), built from
the teacher's posterior predictive and the student's predictive probabilities (the output space:
teacher and student widths differ, their outputs do not). Loss: mean over i, j of (G^S - G^T)^2.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.func import functional_call, vmap
from torch.func import jvp as _jvp
from torch.nn import functional as F

__all__ = [
    "random_directions",
    "teacher_predictive_jvp",
    "student_predictive_jvp",
    "derivative_loss",
    "similarity_graph",
    "relational_loss",
]


def jvp(fn, primals: tuple, tangents: tuple):
    """``torch.func.jvp``, without the FutureWarning torch emits when forward AD first loads its
    decompositions (``torch.jit.script`` is deprecated; not ours to act on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        return _jvp(fn, primals, tangents)


def random_directions(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``k`` directions per input, uniform on the unit sphere of the input space: shape ``(k * B, *x.shape[1:])``
    (direction ``j`` of input ``b`` at row ``j * B + b``)."""
    v = torch.randn((k * x.shape[0], *x.shape[1:]), device=x.device, dtype=x.dtype, generator=generator)
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


def _repeat(x: Tensor, v: Tensor) -> Tensor:
    return x.repeat(v.shape[0] // x.shape[0], *([1] * (x.dim() - 1)))


def teacher_predictive_jvp(
    model: torch.nn.Module, bank: dict[str, Tensor], x: Tensor, v: Tensor, temperature: float = 1.0
) -> Tensor:
    """(1/S) sum_s J_{softmax(f_s / T)}(x) v over the bank's S samples, no gradient; shape ``(len(v), C)``."""
    xs = _repeat(x, v)

    def one(params):
        def probs(inp):
            return F.softmax(functional_call(model, params, (inp,))[0] / temperature, -1)

        return jvp(probs, (xs,), (v,))[1]

    with torch.no_grad():
        return vmap(one)(bank).mean(0)


def student_predictive_jvp(model: torch.nn.Module, x: Tensor, v: Tensor) -> Tensor:
    """J_{p_S}(x) v of the student's predictive probabilities (differentiable in the student's weights)."""

    def probs(inp):
        return F.softmax(model.named_outputs(inp)["predictive"], -1)

    return jvp(probs, (_repeat(x, v),), (v,))[1]


def derivative_loss(student_jv: Tensor, teacher_jv: Tensor) -> Tensor:
    """Mean over directions of the squared distance of the directional derivatives."""
    return (student_jv - teacher_jv).pow(2).sum(-1).mean()


def similarity_graph(z: Tensor) -> Tensor:
    """Cosine similarities of the rows of ``z`` (B x B)."""
    z = F.normalize(z.flatten(1), dim=1)
    return z @ z.T


def relational_loss(student_probs: Tensor, teacher_probs: Tensor) -> Tensor:
    """Mean squared difference of the two minibatch similarity graphs."""
    return (similarity_graph(student_probs) - similarity_graph(teacher_probs)).pow(2).mean()
