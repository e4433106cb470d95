"""Teacher and student networks.

Every network is described by an :class:`Arch` (plain data, saved in checkpoints) and built by
:func:`build`. A network returns a tuple with one tensor per head: head 0 is always the class
logits (``predictive``); further heads have the dimension their expectation needs and its range:
softplus (>= 0, e.g. the 1-unit expected-entropy head), sigmoid (``unit_heads``, in [0, 1]) or linear
(``linear_heads``). All heads read the last hidden layer. Head outputs are never pruned.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "Arch",
    "Net",
    "build",
    "arch_of",
    "mlp_arch",
    "cnn_arch",
    "scaled_width",
    "teacher_arch",
    "student_arch",
]


def scaled_width(base: int, factor: float) -> int:
    """Round ``base * factor`` to an int, never below 1."""
    return max(1, int(round(base * factor)))


@dataclass(frozen=True)
class Arch:
    """Plain description of a network (round-trips through ``to_dict``/``from_dict``)."""

    family: str  # "mlp" | "cnn"
    in_shape: tuple[int, int, int]  # (channels, height, width)
    n_classes: int
    hidden: tuple[int, ...]  # MLP hidden widths, or CNN fully connected hidden widths
    channels: tuple[int, ...] = ()  # CNN conv channel counts (each conv followed by 2x2 max-pool)
    kernel: int = 4
    padding: int = 0
    heads: tuple[tuple[str, int], ...] = (("predictive", 0),)  # (name, dim); predictive dim = n_classes
    dropout: float = 0.0
    linear_heads: tuple[str, ...] = ()  # extra heads without softplus (expectations that may be negative)
    unit_heads: tuple[str, ...] = ()  # extra heads with a sigmoid (expectations in [0, 1])
    temperature: float = 1.0  # predictive logits are divided by it (trained and scored at this temperature)
    input_scale: float = 1.0  # inputs are multiplied by it first (data.pixel_divisor: 255 / divisor)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["linear_heads"] = list(self.linear_heads)
        d["in_shape"] = list(self.in_shape)
        d["hidden"] = list(self.hidden)
        d["channels"] = list(self.channels)
        d["heads"] = [[n, k] for n, k in self.heads]
        if self.input_scale == 1.0:  # the key postdates saved networks: absent means 1
            del d["input_scale"]
        if self.unit_heads:  # likewise: absent means none, so earlier networks' records stay identical
            d["unit_heads"] = list(self.unit_heads)
        else:
            del d["unit_heads"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Arch:
        return cls(
            family=str(d["family"]),
            in_shape=tuple(int(v) for v in d["in_shape"]),
            n_classes=int(d["n_classes"]),
            hidden=tuple(int(v) for v in d["hidden"]),
            channels=tuple(int(v) for v in d.get("channels", ())),
            kernel=int(d.get("kernel", 4)),
            padding=int(d.get("padding", 0)),
            heads=tuple((str(n), int(k)) for n, k in d.get("heads", [("predictive", 0)])),
            dropout=float(d.get("dropout", 0.0)),
            linear_heads=tuple(str(n) for n in d.get("linear_heads", ())),
            temperature=float(d.get("temperature", 1.0)),
            input_scale=float(d.get("input_scale", 1.0)),
            unit_heads=tuple(str(n) for n in d.get("unit_heads", ())),
        )

    @property
    def head_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.heads)

    def describe(self) -> str:
        if self.family == "mlp":
            return "MLP " + "-".join(str(v) for v in (math.prod(self.in_shape), *self.hidden))
        return f"CNN conv{list(self.channels)} k{self.kernel} fc{list(self.hidden)}"


class Net(nn.Module):
    """MLP or CNN body with one linear head per target."""

    def __init__(self, arch: Arch):
        super().__init__()
        self.arch = arch
        c, h, w = arch.in_shape
        layers: list[nn.Module] = []
        if arch.family == "cnn":
            if not arch.channels:
                raise ValueError("a CNN needs at least one conv layer")
            cin = c
            for cout in arch.channels:
                layers += [
                    nn.Conv2d(cin, cout, arch.kernel, padding=arch.padding),
                    nn.ReLU(),
                    nn.MaxPool2d(2),
                ]
                cin = cout
                h = (h + 2 * arch.padding - arch.kernel + 1) // 2
                w = (w + 2 * arch.padding - arch.kernel + 1) // 2
                if h < 1 or w < 1:
                    raise ValueError(
                        f"input {arch.in_shape} is too small for {len(arch.channels)} conv layers of "
                        f"kernel {arch.kernel} with padding {arch.padding}"
                    )
            layers.append(nn.Flatten())
            width = cin * h * w
        elif arch.family == "mlp":
            layers.append(nn.Flatten())
            width = c * h * w
        else:
            raise ValueError(f"unknown family {arch.family!r} (mlp or cnn)")
        for hdim in arch.hidden:
            layers += [nn.Linear(width, hdim), nn.ReLU()]
            if arch.dropout > 0:
                layers.append(nn.Dropout(arch.dropout))
            width = hdim
        self.body = nn.Sequential(*layers)
        self.heads = nn.ModuleList(
            nn.Linear(width, arch.n_classes if name == "predictive" else dim) for name, dim in arch.heads
        )
        self._unit = tuple(name in arch.unit_heads for name, _ in arch.heads)
        self._positive = tuple(
            name != "predictive" and name not in arch.linear_heads and name not in arch.unit_heads
            for name, _ in arch.heads
        )
        self._scale = tuple(
            1.0 / arch.temperature if name == "predictive" and arch.temperature != 1.0 else None
            for name, _ in arch.heads
        )

    def activate(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """Head ``i``'s output from its linear layer's ``h``: sigmoid for a [0, 1] expectation, softplus for a
        positive one, the logits divided by the temperature for the predictive head, else ``h``."""
        if self._unit[i]:
            return torch.sigmoid(h)
        if self._positive[i]:
            return F.softplus(h)
        return h * self._scale[i] if self._scale[i] is not None else h

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.arch.input_scale != 1.0:
            x = x * self.arch.input_scale
        z = self.body(x)
        out = []
        for i, head in enumerate(self.heads):
            out.append(self.activate(i, head(z)))
        return tuple(out)

    def named_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.arch.head_names, self(x)))


def build(arch: Arch) -> Net:
    return Net(arch)


def arch_of(model: Net) -> Arch:
    """The architecture of ``model`` as it is now (after structured pruning changed its widths)."""
    convs = [m for m in model.body if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.body if isinstance(m, nn.Linear)]
    return replace(
        model.arch,
        channels=tuple(m.out_channels for m in convs),
        hidden=tuple(m.out_features for m in linears),
    )


def mlp_arch(in_shape, n_classes, widths, heads=(("predictive", 0),), dropout=0.0) -> Arch:
    return Arch(
        "mlp",
        tuple(in_shape),
        n_classes,
        tuple(int(w) for w in widths),
        heads=tuple(heads),
        dropout=dropout,
    )


def cnn_arch(in_shape, n_classes, channels, fc, kernel=4, padding=0, heads=(("predictive", 0),), dropout=0.0) -> Arch:
    return Arch(
        "cnn",
        tuple(in_shape),
        n_classes,
        tuple(int(v) for v in fc),
        tuple(int(v) for v in channels),
        kernel,
        padding,
        tuple(heads),
        dropout,
    )


# The paper's CNNs: conv channels and fully connected hidden widths at multiplication factor 1.
PAPER_CNN = {"cnn": ((10, 20), (80,), 4), "cifar_cnn": ((16, 32), (200, 50), 5)}


def teacher_arch(kind: str, in_shape, n_classes, widths=(400, 400), kernel=None, padding=0) -> Arch:
    """The paper's teachers: ``mlp`` (784-400-400-10 on MNIST), ``cnn`` (MNIST CNN), ``cifar_cnn``."""
    kind = getattr(kind, "value", kind)
    if kind == "mlp":
        return mlp_arch(in_shape, n_classes, widths)
    channels, fc, k = PAPER_CNN[kind]
    return cnn_arch(in_shape, n_classes, channels, fc, kernel or k, padding)


def student_arch(
    family: str,
    in_shape,
    n_classes,
    heads,
    widths=(400, 400),
    m1=1.0,
    m2=1.0,
    teacher_cnn: str = "cnn",
    kernel=None,
    padding=0,
    dropout=0.0,
    linear_heads=(),
    temperature: float = 1.0,
) -> Arch:
    """A student: MLP with the given widths, or the paper's CNN scaled by ``m1`` (conv) and ``m2`` (fc).

    ``linear_heads`` names extra heads left linear (no softplus); ``temperature`` divides the
    predictive logits (a student distilled at temperature T is trained, scored and exported at T).
    """
    family = getattr(family, "value", family)
    if family == "mlp":
        arch = mlp_arch(in_shape, n_classes, widths, heads, dropout)
    else:
        channels, fc, k = PAPER_CNN[teacher_cnn]
        arch = cnn_arch(
            in_shape,
            n_classes,
            [scaled_width(c, m1) for c in channels],
            [scaled_width(f, m2) for f in fc],
            kernel or k,
            padding,
            heads,
            dropout,
        )
    return replace(arch, linear_heads=tuple(linear_heads), temperature=float(temperature))
