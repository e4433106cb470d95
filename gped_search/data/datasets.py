"""Datasets as device tensors: MNIST / Fashion-MNIST from a data root, embedded digits.

Images are float32 in [0, 1] with shape (N, C, H, W); labels int64. MNIST-style data is read with
torchvision from the gzipped ``<root>/<Name>/raw/*.gz`` layout after decompressing into a cache
folder (never into the data root, which may be read-only).
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from gped_search.errors import DataError  # noqa: F401  (raised here; re-exported)

__all__ = ["DataError", "Split", "DataBundle", "resolve_root", "load_split", "cache_dir"]

_TV_NAMES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass
class Split:
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64

    def to(self, device) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class DataBundle:
    """Everything a run needs, on one device.

    ``train`` is the teacher's training set (occluded, possibly a subset); ``transfer`` the
    unlabelled inputs the student learns from (occluded, the training set less the validation
    split); ``val`` the validation split (model selection; None with ``data.validation: 0``);
    ``test`` the occluded test set; ``ood`` an optional out-of-distribution test set; ``val_ood`` as many
    OOD images for the validation split, from the OOD dataset's *training* images, so the selection
    metric ``ood_auroc`` never scores an image ``test_ood_auroc`` scores.
    """

    name: str
    train: Split
    transfer: torch.Tensor
    test: Split
    n_classes: int
    ood: Split | None = None
    ood_name: str | None = None
    val: Split | None = None  # validation split carved from the training set (never trained on)
    val_ood: Split | None = None  # OOD images for the validation side (the OOD dataset's training images)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.test.x.shape[1:])


def cache_dir() -> Path:
    return Path(os.environ.get("GPED_CACHE", Path.home() / ".cache" / "gped_search"))


def resolve_root(root: str | None) -> Path:
    """The data root: the config's, else $GPED_DATA_ROOT, else ../shared/data, else ./data."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get("GPED_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    for cand in (Path("../shared/data"), Path("data")):
        if cand.is_dir():
            return cand
    return Path("data")


def _decompressed(root: Path, name: str) -> Path:
    """Make ``<cache>/<Name>/raw/<file>`` hold the idx files for torchvision; return the cache root."""
    folder = _TV_NAMES[name]
    raw = root / folder / "raw"
    missing = [f for f in _RAW_FILES if not (raw / f).exists() and not (raw / f"{f}.gz").exists()]
    if missing:
        raise DataError(
            f"{name}: no {missing[0]}(.gz) under {raw.resolve()} (the data root is the first of: data.root, "
            f"$GPED_DATA_ROOT, ../shared/data if it exists, ./data); point the data root at a folder "
            f"holding {folder}/raw/ with data.root in the study file, --set data.root=PATH or "
            f"GPED_DATA_ROOT=PATH"
        )
    target_root = cache_dir() / "data"
    target = target_root / folder / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for f in _RAW_FILES:
        dst = target / f
        if dst.exists():
            continue
        src = raw / f
        tmp = target / f"{f}.tmp{os.getpid()}"
        try:
            if src.exists():
                shutil.copyfile(src, tmp)
            else:
                with gzip.open(raw / f"{f}.gz", "rb") as fin, open(tmp, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
            os.replace(tmp, dst)  # atomic: concurrent workers never see half a file
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{name}: cannot read {src}(.gz): {e}") from e
    return target_root


def _torchvision(name: str, root: Path, train: bool) -> Split:
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name]
    try:
        ds = cls(str(_decompressed(root, name)), train=train, download=False)
    except RuntimeError as e:
        raise DataError(f"{name}: torchvision could not load the files from {root}: {e}") from e
    x = ds.data.unsqueeze(1).float().div_(255.0)
    return Split(x, ds.targets.long())


DIGITS_SPLIT_SEED = 1234
"""Seed of the fixed, seed-independent 80/20 permutation of scikit-learn's digits."""


def _digits(train: bool) -> Split:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    # A fixed, seed-independent 80/20 split so every study sees the same test set.
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_train = int(0.8 * len(y))
    idx = perm[:n_train] if train else perm[n_train:]
    return Split(x[idx].contiguous(), y[idx].contiguous())


def load_split(name: str, train: bool, root: str | None = None) -> Split:
    """Load one split of a dataset on the CPU."""
    name = getattr(name, "value", name)
    if name == "digits":
        return _digits(train)
    if name in _TV_NAMES:
        return _torchvision(name, resolve_root(root), train)
    raise DataError(f"unknown dataset {name!r} (digits, mnist, fashion_mnist)")
