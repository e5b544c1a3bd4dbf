"""Zone geometry: box anchors, many-point-in-many-polygon tests and path-segment crossing.

Pure numpy; the units are whatever the caller uses (pixels in :mod:`models.zones.analytics`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["PolygonSet", "anchors", "meets_segment", "points_in_polygons"]


def anchors(xyxy: np.ndarray) -> np.ndarray:
    """Bottom centres ``(n, 2)`` float64 of boxes ``xyxy (n, 4)`` (pixels)."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2.0, xyxy[:, 3]], axis=1)


def points_in_polygons(points: np.ndarray, polygons: list[np.ndarray]) -> np.ndarray:
    """Even-odd rule: ``(n, z)`` bool, True where point ``i`` is inside polygon ``j``.

    ``points``: ``(n, 2)``; ``polygons``: ``z`` arrays ``(k_j, 2)``, same units. All polygons
    are tested at once (one ray cast over every edge), so 100 points x 20 zones is a few
    array operations.
    """
    return PolygonSet(polygons).contains(points)


class PolygonSet:
    """The edges of several polygons, laid out once for :meth:`contains`."""

    def __init__(self, polygons: list[np.ndarray]) -> None:
        self.n = len(polygons)
        if not polygons:
            return
        a = np.concatenate([np.asarray(p, np.float64) for p in polygons])
        b = np.concatenate([np.roll(np.asarray(p, np.float64), -1, axis=0) for p in polygons])
        self.ax, self.ay, self.bx, self.by = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
        self.slope = (self.bx - self.ax) / np.where(self.by == self.ay, 1.0, self.by - self.ay)
        self.starts = np.cumsum([0] + [len(p) for p in polygons[:-1]])

    def contains(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if self.n == 0 or len(points) == 0:
            return np.zeros((len(points), self.n), bool)
        px, py = points[:, :1], points[:, 1:]
        straddles = (self.ay > py) != (self.by > py)  # (n, E); horizontal edges never do
        crossings = straddles & (px < self.ax + (py - self.ay) * self.slope)
        return (np.add.reduceat(crossings.astype(np.int32), self.starts, axis=1) % 2).astype(bool)


def meets_segment(a: np.ndarray, b: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> bool:
    """Whether the path ``a -> b`` meets the segment ``p1 -> p2`` (end points included)."""
    d, e = b - a, p2 - p1
    denom = d[0] * e[1] - d[1] * e[0]
    if denom == 0:
        return False  # parallel: a path along the line never crosses it
    w = p1 - a
    t = (w[0] * e[1] - w[1] * e[0]) / denom  # along the path
    u = (w[0] * d[1] - w[1] * d[0]) / denom  # along the segment
    return -1e-9 <= t <= 1 + 1e-9 and -1e-9 <= u <= 1 + 1e-9
