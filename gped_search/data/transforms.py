"""Occlusion masks, transfer-set perturbation and the study's data bundle."""

from __future__ import annotations

import torch

from gped_search.config import DataConfig
from gped_search.data.datasets import DataBundle, Split, load_split
from gped_search.seeds import derive_seed

__all__ = [
    "occlusion_positions",
    "occlude",
    "perturb",
    "make_bundle",
    "validation_size",
    "VAL_SEED",
    "test_split",
    "ood_set",
    "IMAGE_SHAPES",
    "check_ood_spec",
]

IMAGE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28)}
"""Each dataset's image shape (C, H, W): what a student of that dataset takes as input."""

VAL_SEED = 4321
"""The validation split's permutation seed: fixed, so every study and seed sees the same split."""


def validation_size(cfg: DataConfig, n_train: int) -> int:
    """How many training images the validation split takes (see ``DataConfig.validation``)."""
    v = cfg.validation
    name = getattr(cfg.dataset, "value", cfg.dataset)
    if v is None:
        v = 0.2 if name == "digits" else 10_000
    k = int(round(v * n_train)) if 0 < v < 1 else int(v)
    if k >= n_train:
        raise ValueError(
            f"data.validation={cfg.validation}: {k} validation images leave none of the "
            f"{n_train} training images for the teacher"
        )
    return k


def occlusion_positions(n: int, height: int, width: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Top-left corners (n, 2) of one ``size``-pixel square patch per image, uniform over valid spots."""
    size = min(size, height, width)
    rows = torch.randint(0, height - size + 1, (n,), generator=generator)
    cols = torch.randint(0, width - size + 1, (n,), generator=generator)
    return torch.stack([rows, cols], dim=1)


def occlude(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A copy of ``x`` (N, C, H, W) with one square of zeros per image (the paper's occlusion)."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    size = min(size, h, w)
    pos = occlusion_positions(n, h, w, size, generator).to(x.device)
    r = torch.arange(h, device=x.device)
    c = torch.arange(w, device=x.device)
    in_rows = (r[None, :] >= pos[:, :1]) & (r[None, :] < pos[:, :1] + size)  # (n, h)
    in_cols = (c[None, :] >= pos[:, 1:]) & (c[None, :] < pos[:, 1:] + size)  # (n, w)
    patch = in_rows[:, :, None] & in_cols[:, None, :]
    return x.masked_fill(patch[:, None], 0.0)


def perturb(x: torch.Tensor, sigma: float, clamp: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Transfer-input perturbation x' = x + N(0, sigma^2), clamped to [0, 1] for images."""
    if sigma > 0:
        x = x + sigma * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    return x.clamp(0.0, 1.0) if clamp else x


def make_bundle(cfg: DataConfig, seed: int, device: torch.device | str = "cpu") -> DataBundle:
    """Load, occlude (positions from seeded generators, fixed for the run) and move to ``device``."""
    name = getattr(cfg.dataset, "value", cfg.dataset)
    train = load_split(name, True, cfg.root)
    test = load_split(name, False, cfg.root)
    # One generator per split, derived from the study seed, so masks do not depend on load order.
    g_train = torch.Generator().manual_seed(derive_seed(seed, "train-mask"))
    g_test = torch.Generator().manual_seed(derive_seed(seed, "test-mask"))
    train_x = occlude(train.x, cfg.mask_size, g_train)
    test_x = occlude(test.x, cfg.mask_size, g_test)
    train_y = train.y
    val = None
    n_val = validation_size(cfg, len(train_y))
    if n_val:
        perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(VAL_SEED))
        keep = perm[n_val:].sort().values  # the rest keeps its order (train_subset = the first k of it)
        val = Split(train_x[perm[:n_val]].contiguous(), train_y[perm[:n_val]].contiguous())
        train_x, train_y = train_x[keep].contiguous(), train_y[keep].contiguous()
    k = cfg.train_subset
    teacher = Split(train_x[:k], train_y[:k]) if k else Split(train_x, train_y)
    ood = val_ood = None
    if cfg.ood is not None:
        o = load_split(cfg.ood.value, False, cfg.root)
        if o.x.shape[1:] != test.x.shape[1:]:
            raise ValueError(
                f"OOD set {cfg.ood.value} has shape {tuple(o.x.shape[1:])}, {name} has {tuple(test.x.shape[1:])}"
            )
        ood = Split(
            occlude(o.x, cfg.mask_size, torch.Generator().manual_seed(derive_seed(seed, "ood-mask"))),
            o.y,
        )
        if val is not None:  # the validation side's OOD images: the OOD dataset's training images
            ot = load_split(cfg.ood.value, True, cfg.root)
            pick = torch.randperm(len(ot), generator=torch.Generator().manual_seed(VAL_SEED))[: len(val)]
            g = torch.Generator().manual_seed(derive_seed(seed, "ood-val-mask"))
            val_ood = Split(occlude(ot.x[pick], cfg.mask_size, g).contiguous(), ot.y[pick].contiguous())
    n_classes = int(train.y.max().item()) + 1
    return DataBundle(
        name=name,
        train=teacher.to(device),
        transfer=train_x.to(device),
        test=Split(test_x, test.y).to(device),
        n_classes=n_classes,
        ood=ood.to(device) if ood is not None else None,
        ood_name=cfg.ood.value if cfg.ood is not None else None,
        val=val.to(device) if val is not None else None,
        val_ood=val_ood.to(device) if val_ood is not None else None,
    )


def test_split(cfg: DataConfig, seed: int, device: torch.device | str = "cpu") -> Split:
    """The study's test set exactly as :func:`make_bundle` makes it, without loading the training set."""
    name = getattr(cfg.dataset, "value", cfg.dataset)
    test = load_split(name, False, cfg.root)
    x = occlude(test.x, cfg.mask_size, torch.Generator().manual_seed(derive_seed(seed, "test-mask")))
    return Split(x, test.y).to(device)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def check_ood_spec(dataset, spec: str) -> None:
    """Refuse an OOD set a student of ``dataset`` cannot be scored on, before any data is loaded: another
    dataset whose images have another shape (Fashion-MNIST for an 8x8 digits student), or an occlusion
    patch that is not 1..side-1 pixels (a patch as large as the image blanks every pixel). One-line
    :class:`ValueError` (the caller names its flag)."""
    name = getattr(dataset, "value", dataset)
    ours = IMAGE_SHAPES.get(name)
    if ours is None:  # a dataset this table does not know yet: its loader will say what is wrong
        return
    if spec.startswith("occlusion:"):
        try:
            size = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"{spec!r}: use occlusion:<size in pixels>") from None
        side = min(ours[1:])
        if not 1 <= size < side:
            raise ValueError(
                f"an occlusion patch of {size} px on {_shape(ours[1:])} {name} images "
                + ("blanks every pixel" if size >= side else "occludes nothing")
                + f"; give occlusion:1..{side - 1}"
            )
        return
    if spec not in IMAGE_SHAPES:
        raise ValueError(f"use one of {sorted(IMAGE_SHAPES)} or occlusion:<size>")
    if IMAGE_SHAPES[spec] != ours:
        raise ValueError(
            f"{spec} images are {_shape(IMAGE_SHAPES[spec])}, this {name} student takes "
            f"{_shape(ours)} inputs (shape mismatch); use a {_shape(ours)} dataset or occlusion:<size>"
        )


def ood_set(cfg: DataConfig, spec: str, seed: int, device: torch.device | str = "cpu") -> tuple[str, torch.Tensor]:
    """An OOD test set by name: ``occlusion:<size>`` (the study's test images, occluded with masks
    from the ``ood-occlusion`` seed, in ``evaluate`` and ``downstream`` alike) or a
    dataset (the study's ``data.ood`` occluded as :func:`make_bundle` does; any other one as it is).
    Returns (label, inputs)."""
    import dataclasses

    check_ood_spec(cfg.dataset, spec)
    if spec.startswith("occlusion:"):
        size = int(spec.split(":", 1)[1])
        occl = dataclasses.replace(cfg, mask_size=size, ood=None)
        return f"occlusion {size}px", test_split(occl, derive_seed(seed, "ood-occlusion"), device).x
    o = load_split(spec, False, cfg.root)
    ours = cfg.ood is not None and getattr(cfg.ood, "value", cfg.ood) == spec
    mask = cfg.mask_size if ours else 0
    return spec, occlude(o.x, mask, torch.Generator().manual_seed(derive_seed(seed, "ood-mask"))).to(device)
