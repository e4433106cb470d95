"""Student checkpoints: one plain file that loads with ``torch.load(path, weights_only=True)``.

Layout (``version`` 1)::

    {"format": "gped-search-student", "version": 1, "arch": Arch.to_dict(),
     "state_dict": {name: tensor}, "config": ..., "metrics": ..., "pruning": ..., "extra": ...}

Everything is dicts, lists, tuples, str, numbers, bools, None and CPU tensors; ``save_checkpoint``
converts paths, enums, numpy scalars/arrays and dataclasses and refuses anything else. The saved
``arch`` is the network's current (pruned) shape, so loading needs no pruning history. Loading
never runs pickled code (``weights_only=True`` always); every failure is a :class:`CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from gped_search.errors import CheckpointError  # noqa: F401  (raised here; re-exported)
from gped_search.files import atomic_write_bytes, weights_only_load
from gped_search.models.nets import Arch, arch_of, build

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "save_checkpoint",
    "plain_data",
    "load_checkpoint",
]

FORMAT = "gped-search-student"
VERSION = 1


def plain_data(x, where: str):
    """``x`` as plain data a weights-only checkpoint can hold (tensors on the CPU); anything else is a TypeError."""
    if type(x).__module__ == "numpy":  # before the builtins: np.float64 subclasses float
        return torch.as_tensor(x) if getattr(x, "ndim", 0) else x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, enum.Enum):
        return plain_data(x.value, where)
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return plain_data(dataclasses.asdict(x), where)
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            k = plain_data(k, where)
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"{where}: dict key {k!r} is not plain")
            out[k] = plain_data(v, f"{where}[{k!r}]")
        return out
    if isinstance(x, (list, tuple)):
        return [plain_data(v, f"{where}[{i}]") for i, v in enumerate(x)]
    if type(x).__module__ == "numpy":
        return torch.as_tensor(x) if getattr(x, "ndim", 0) else x.item()
    raise TypeError(f"{where}: {type(x).__name__} cannot be stored in a weights-only checkpoint")


_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _reason(e: BaseException) -> str:
    """One short line from a (often multi-paragraph) torch error message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(_BOILERPLATE)] or lines or [""]
    text = useful[0].removeprefix("WeightsUnpickler error:").strip()
    return f"{type(e).__name__}: {text.split('. ')[0][:160]}"


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    config: dict | None = None,
    metrics: dict | None = None,
    pruning: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model`` (its current shape and weights) and plain metadata atomically to ``path``."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch_of(model).to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": plain_data(config, "config"),
        "metrics": plain_data(metrics, "metrics"),
        "pruning": plain_data(pruning, "pruning"),
        "extra": plain_data(extra, "extra"),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the saved network (eval mode) and return ``(model, meta)``; meta has no state_dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = weights_only_load(path, map_location)
    except pickle.UnpicklingError as e:  # random bytes, or a pickle that wants to run code
        raise CheckpointError(f"{path}: refused by the weights-only loader ({_reason(e)})") from e
    except Exception as e:  # truncated / corrupt zip archive, I/O errors
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_reason(e)})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (no matching 'format' key)")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {data.get('version')!r} (expected {VERSION})")
    try:
        model = build(Arch.from_dict(data["arch"]))
        model.load_state_dict(data["state_dict"], strict=True)
    except Exception as e:
        raise CheckpointError(f"{path}: checkpoint does not rebuild the network ({_reason(e)})") from e
    model.to(map_location).eval()
    meta = {k: v for k, v in data.items() if k != "state_dict"}
    return model, meta
