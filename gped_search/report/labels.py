"""Trial-number labels on a front's points, placed where they overlap nothing."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

__all__ = ["annotate_front"]


def annotate_front(
    ax: Axes,
    fig: Figure,
    xs: np.ndarray,
    ys: np.ndarray,
    labels: list[str],
    outward: tuple[float, float],
) -> None:
    """Label front points, greedily choosing offsets that avoid other labels/markers.

    ``outward`` points towards the ideal corner, where no trial can lie, so that
    side is tried first.
    """
    fig.draw_without_rendering()  # settle layout and limits so display coordinates are final (no rasterizing)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    r = 6.0  # ringed-marker half-size in pixels
    taken = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in pts]
    others = [c.get_offsets() for c in ax.collections if len(c.get_offsets())]
    others += [ln.get_xydata() for ln in ax.lines if ln.get_marker() not in (None, "None", "")]
    for xy in others:  # every other marker is an obstacle too (smaller box)
        for qx, qy in ax.transData.transform(np.asarray(xy, dtype=float)):
            taken.append(Bbox.from_extents(qx - 3.5, qy - 3.5, qx + 3.5, qy + 3.5))
    ox, oy = outward
    dirs = [(ox, oy), (ox, 0), (0, oy), (-ox, oy), (ox, -oy), (-ox, 0), (0, -oy), (-ox, -oy)]
    cands = [(dx * d, dy * d) for d in (6, 14, 24) for dx, dy in dirs]
    order = [0, len(xs) - 1, *range(1, len(xs) - 1)] if len(xs) > 1 else [0]
    for i in order:  # both ends first, so the extremes are always labelled
        for dx, dy in cands:
            lead = {"arrowstyle": "-", "lw": 0.5, "color": "0.4", "shrinkA": 0, "shrinkB": 4}
            ann = ax.annotate(
                labels[i],
                (xs[i], ys[i]),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=8,
                color="0.1",
                arrowprops=lead if max(abs(dx), abs(dy)) > 10 else None,
                ha="center" if dx == 0 else ("left" if dx > 0 else "right"),
                va="center" if dy == 0 else ("bottom" if dy > 0 else "top"),
            )
            bb = ann.get_window_extent(renderer).expanded(1.06, 1.12)
            inside = ax.bbox.contains(bb.x0, bb.y0) and ax.bbox.contains(bb.x1, bb.y1)
            if inside and not any(bb.overlaps(t) for t in taken):
                taken.append(bb)
                ann.set_in_layout(False)
                break
            ann.remove()  # no free spot: the point stays ringed but unlabelled
