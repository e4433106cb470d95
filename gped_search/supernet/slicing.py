"""Prefix slicing of a weight-sharing student: one :class:`~gped_search.models.Net` at the largest widths
holds every smaller student of its family as the leading rows and columns of its weights.

A sub-network is named by an :class:`~gped_search.models.Arch` of the same family: an MLP with
``hidden[i] <= W`` for each of its first ``d <= D`` layers (the supernet has D layers of one width W,
so a shallower student's heads read its last layer through the leading W columns of the shared heads),
or a CNN with as many conv layers, each with at most the supernet's channels, and fully connected
widths at most the supernet's. A conv output flattens channel-major, so the first ``c`` channels are
the first ``c*h*w`` features: the fully connected layer's leading columns.

:func:`sliced_outputs` runs a sub-network inside the supernet (for training, gradients flow into the
shared weights); :func:`extract` copies it out as an ordinary ``Net``, with equal outputs. An MLP
supernet over several depths has one set of heads per depth (:func:`add_depth_heads`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional as F

from gped_search.models import Arch, Net, build

__all__ = ["SliceError", "supernet_arch", "check_slice", "sliced_outputs", "extract", "add_depth_heads"]


class SliceError(ValueError):
    """A sub-network that the supernet does not contain."""


def supernet_arch(archs: Sequence[Arch]) -> Arch:
    """The smallest supernet that contains every arch of ``archs`` (one family)."""
    if not archs:
        raise SliceError("a supernet needs at least one sub-network")
    first = archs[0]
    for a in archs:
        if replace(a, hidden=first.hidden, channels=first.channels) != first:
            raise SliceError(f"{a.describe()} and {first.describe()} differ in more than their widths")
    if first.family == "mlp":
        depth = max(len(a.hidden) for a in archs)
        width = max(max(a.hidden) for a in archs if a.hidden) if any(a.hidden for a in archs) else 0
        return replace(first, hidden=(width,) * depth)
    if len({len(a.channels) for a in archs}) != 1 or len({len(a.hidden) for a in archs}) != 1:
        raise SliceError("CNN sub-networks must have the same number of conv and fully connected layers")
    channels = tuple(max(v) for v in zip(*(a.channels for a in archs)))
    hidden = tuple(max(v) for v in zip(*(a.hidden for a in archs))) if first.hidden else ()
    return replace(first, channels=channels, hidden=hidden)


def check_slice(sup: Arch, sub: Arch) -> None:
    """Raise :class:`SliceError` unless ``sub`` is a prefix slice of ``sup``."""
    if replace(sub, hidden=sup.hidden, channels=sup.channels) != sup:
        raise SliceError(f"{sub.describe()} is not of the supernet's kind ({sup.describe()})")
    if sup.family == "mlp":
        if not 1 <= len(sub.hidden) <= len(sup.hidden) or any(w > sup.hidden[0] for w in sub.hidden):
            raise SliceError(f"{sub.describe()} is not inside the supernet {sup.describe()}")
        return
    if len(sub.channels) != len(sup.channels) or len(sub.hidden) != len(sup.hidden):
        raise SliceError(f"{sub.describe()} has another number of layers than the supernet {sup.describe()}")
    if any(a > b for a, b in zip(sub.channels + sub.hidden, sup.channels + sup.hidden)):
        raise SliceError(f"{sub.describe()} is not inside the supernet {sup.describe()}")


def add_depth_heads(net: Net, depths) -> Net:
    """Give an MLP supernet its own heads for each shallower depth in ``depths``: a 1-layer student's
    heads read other features than a 2-layer one's, and sharing one set makes them fight. The heads
    live in ``net.depth_heads`` (so in its state dict); the supernet's own heads serve its full depth."""
    full = len(net.arch.hidden)
    extra = sorted({int(d) for d in depths if int(d) != full})
    if net.arch.family != "mlp" or not extra:
        return net
    width = net.arch.hidden[0]
    device = next(net.parameters()).device
    net.depth_heads = nn.ModuleDict(
        {str(d): nn.ModuleList(nn.Linear(width, h.out_features) for h in net.heads).to(device) for d in extra}
    )
    return net


def _heads(net: Net, sub: Arch) -> nn.ModuleList:
    extra = getattr(net, "depth_heads", None)
    key = str(len(sub.hidden))
    return extra[key] if extra is not None and sub.family == "mlp" and key in extra else net.heads


def _layers(net: Net) -> tuple[list[nn.Conv2d], list[nn.Linear]]:
    convs = [m for m in net.body if isinstance(m, nn.Conv2d)]
    linears = [m for m in net.body if isinstance(m, nn.Linear)]
    return convs, linears


def _plan(net: Net, sub: Arch):
    """Per layer of ``sub``: (module, rows kept, columns kept); the heads' columns last."""
    check_slice(net.arch, sub)
    convs, linears = _layers(net)
    plan = []
    cin = sub.in_shape[0]
    h, w = sub.in_shape[1], sub.in_shape[2]
    for conv, cout in zip(convs, sub.channels):
        plan.append((conv, cout, cin))
        cin = cout
        h = (h + 2 * sub.padding - sub.kernel + 1) // 2
        w = (w + 2 * sub.padding - sub.kernel + 1) // 2
    width = cin * h * w if sub.family == "cnn" else sub.in_shape[0] * sub.in_shape[1] * sub.in_shape[2]
    for lin, out in zip(linears, sub.hidden):
        plan.append((lin, out, width))
        width = out
    return plan, width


def sliced_outputs(net: Net, sub: Arch, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs of sub-network ``sub`` of supernet ``net`` on ``x``, by head name (as ``Net.named_outputs``)."""
    plan, width = _plan(net, sub)
    a = net.arch
    if a.input_scale != 1.0:
        x = x * a.input_scale
    z = x
    for mod, rows, cols in plan:
        if isinstance(mod, nn.Conv2d):
            z = F.conv2d(z, mod.weight[:rows, :cols], mod.bias[:rows], padding=mod.padding)
            z = F.max_pool2d(F.relu(z), 2)
        else:
            if z.dim() > 2:
                z = z.flatten(1)
            z = F.relu(F.linear(z, mod.weight[:rows, :cols], mod.bias[:rows]))
            if a.dropout > 0:
                z = F.dropout(z, a.dropout, net.training)
    if z.dim() > 2:
        z = z.flatten(1)
    out = {}
    for i, ((name, _), head) in enumerate(zip(a.heads, _heads(net, sub))):
        out[name] = net.activate(i, F.linear(z, head.weight[:, :width], head.bias))
    return out


@torch.no_grad()
def extract(net: Net, sub: Arch) -> Net:
    """Sub-network ``sub`` of ``net`` as an ordinary network with copies of the sliced weights."""
    plan, width = _plan(net, sub)
    small = build(sub).to(next(net.parameters()).device)
    convs, linears = _layers(small)
    for (mod, rows, cols), dst in zip(plan, [*convs, *linears]):
        dst.weight.copy_(mod.weight[:rows, :cols])
        dst.bias.copy_(mod.bias[:rows])
    for src, dst in zip(_heads(net, sub), small.heads):
        dst.weight.copy_(src.weight[:, :width])
        dst.bias.copy_(src.bias)
    small.train(net.training)
    return small
