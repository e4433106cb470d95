"""Datasets on a data root, embedded digits, occlusion and transfer perturbation."""

from gped_search.data.datasets import DataBundle, DataError, Split, load_split, resolve_root
from gped_search.data.transforms import (
    make_bundle,
    occlude,
    occlusion_positions,
    ood_set,
    perturb,
    test_split,
)

__all__ = [
    "DataBundle",
    "DataError",
    "Split",
    "load_split",
    "resolve_root",
    "make_bundle",
    "occlude",
    "ood_set",
    "test_split",
    "occlusion_positions",
    "perturb",
]
