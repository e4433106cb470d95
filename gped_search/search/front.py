"""Ranking candidates by non-dominated sorting, for the strategies that choose whom to train further:
the supernet's extracted front (:mod:`gped_search.search.supernet_run`) and successive halving's rungs
(:mod:`gped_search.search.halving`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gped_search.report.tables import direction_signs, pareto_mask

__all__ = ["nondominated_ranks", "keep_best", "spread"]


def nondominated_ranks(values: np.ndarray, directions: Sequence[Any]) -> np.ndarray:
    """Rank 0 for the non-dominated rows of ``values`` (n, k), 1 for those non-dominated once rank 0 is
    removed, and so on. Rows with a NaN get the last rank + 1 (never ahead of a measured row)."""
    arr = np.asarray(values, dtype=float).reshape(len(values), len(directions))
    ranks = np.full(arr.shape[0], -1, dtype=int)
    valid = ~np.isnan(arr).any(axis=1)
    left = np.flatnonzero(valid)
    r = 0
    while left.size:
        on = pareto_mask(arr[left], directions)
        ranks[left[on]] = r
        left = left[~on]
        r += 1
    ranks[~valid] = r
    return ranks


def spread(values: np.ndarray, directions: Sequence[Any], k: int) -> np.ndarray:
    """``k`` indices of ``values`` (one front) spread along it: sorted by the last objective (a cost, in
    the search's convention), the two ends first, then evenly spaced ranks between them."""
    n = len(values)
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.arange(0)
    signs = direction_signs(directions)
    key = np.asarray(values, dtype=float).reshape(n, len(signs))[:, -1] * signs[-1]
    order = np.argsort(key, kind="stable")
    if k == 1:
        return order[:1]
    picks = np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))
    return order[picks]


def keep_best(values: np.ndarray, directions: Sequence[Any], k: int, *, ties: bool = True) -> np.ndarray:
    """Indices of at least ``k`` rows, best ranks first (:func:`nondominated_ranks`).

    Whole ranks are kept while they fit; the rank that does not fit is cut to what is left by
    :func:`spread`, unless it is the first rank and ``ties`` is set: a front is never split, so every
    non-dominated row is kept even when there are more than ``k``.
    """
    ranks = nondominated_ranks(values, directions)
    out: list[int] = []
    for r in range(int(ranks.max(initial=-1)) + 1):
        members = np.flatnonzero(ranks == r)
        if len(out) + len(members) <= k or (r == 0 and ties):
            out.extend(members.tolist())
        else:
            pick = spread(np.asarray(values, dtype=float)[members], directions, k - len(out))
            out.extend(members[pick].tolist())
        if len(out) >= k:
            break
    return np.asarray(out, dtype=int)
