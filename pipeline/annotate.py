"""Draw a FrameResult onto its frame: boxes, labels, track ids, skeletons, forecasts, masks,
and (with a :class:`SceneOverlay`) zones, lines and their counts."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from models.coco17 import COCO17_SKELETON
from models.results import FrameResult

_PALETTE = np.array(
    [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
     (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128),
     (170, 110, 40)],
    dtype=np.uint8,
)  # fmt: skip


def color_for(key: int) -> tuple[int, int, int]:
    """A stable RGB colour for a class id or track id."""
    c = _PALETTE[int(key) % len(_PALETTE)]
    return int(c[0]), int(c[1]), int(c[2])


class SceneOverlay:
    """Zones and lines of the config with their live counts, for :func:`annotate`.

    It follows the published events (:meth:`event`): ``zone.count`` gives each zone's
    occupancy per label and ``line.cross`` each line's ``count_in`` / ``count_out``, so what is
    drawn on a frame is what subscribers had been told by then.

    Args:
        zones, lines: the ``zones`` and ``lines`` config sections as lists of dicts.
    """

    def __init__(self, zones: list[dict[str, Any]], lines: list[dict[str, Any]]) -> None:
        self.zones, self.lines = list(zones), list(lines)
        self.occupancy: dict[tuple[str, str], dict[str, int]] = {}  # (stream, zone) -> counts
        self.crossings: dict[tuple[str, str], tuple[int, int]] = {}  # (stream, line) -> in, out

    @classmethod
    def from_config(cls, cfg: Any) -> SceneOverlay:
        """The zones and lines of a :class:`pipeline.config.VigilConfig`."""
        return cls([z.model_dump(mode="json") for z in cfg.zones],
                   [ln.model_dump(mode="json") for ln in cfg.lines])  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.zones or self.lines)

    def event(self, event: dict[str, Any]) -> None:
        """Follow a published event (any type)."""
        kind, sid = event["type"], event["stream"]
        if kind == "zone.count":
            self.occupancy.setdefault((sid, event["zone"]), {})[event["label"]] = event["count"]
        elif kind == "line.cross":
            self.crossings[sid, event["line"]] = (event["count_in"], event["count_out"])
        elif kind == "stream.offline":
            self.occupancy = {k: v for k, v in self.occupancy.items() if k[0] != sid}

    def draw(self, img: np.ndarray, stream_id: str) -> None:
        """Draw the stream's zones (outline, name, occupancy) and lines (with the ``in``
        direction arrow and counts) on ``img`` ``(H, W, 3) uint8`` in place."""
        h, w = img.shape[:2]
        scale = np.array([w, h], np.float64)
        for i, zone in enumerate(self.zones):
            if zone.get("stream") not in (None, stream_id):
                continue
            poly = np.asarray(zone["polygon"], np.float64)
            poly = (poly if zone.get("pixels") else poly * scale).round().astype(np.int32)
            color = color_for(i + 3)
            cv2.polylines(img, [poly], True, color, 2, cv2.LINE_AA)
            counts = self.occupancy.get((stream_id, zone["name"]), {})
            text = zone["name"] + "".join(f" {k}:{n}" for k, n in sorted(counts.items()) if n)
            x, y = int(poly[:, 0].min()), int(poly[:, 1].min())
            _label(img, text, max(x, 0), max(y, 0) + 16, color)
        for i, line in enumerate(self.lines):
            if line.get("stream") not in (None, stream_id):
                continue
            pts = np.asarray(line["points"], np.float64)
            (x1, y1), (x2, y2) = (pts if line.get("pixels") else pts * scale).round().astype(int)
            color = color_for(i + 7)
            cv2.line(img, (x1, y1), (x2, y2), color, 2, cv2.LINE_AA)
            # The "in" direction: towards the side where (p2 - p1) x (a - p1) < 0.
            mx, my, nx, ny = (x1 + x2) / 2, (y1 + y2) / 2, (y2 - y1), -(x2 - x1)
            norm = max((nx * nx + ny * ny) ** 0.5, 1e-6)
            tip = (int(mx + 20 * nx / norm), int(my + 20 * ny / norm))
            cv2.arrowedLine(img, (int(mx), int(my)), tip, color, 2, cv2.LINE_AA, tipLength=0.4)
            n_in, n_out = self.crossings.get((stream_id, line["name"]), (0, 0))
            _label(img, f"{line['name']} in:{n_in} out:{n_out}", min(x1, x2), min(y1, y2) + 16,
                   color)  # fmt: skip


def annotate(
    rgb: np.ndarray,
    result: FrameResult,
    *,
    mask_alpha: float = 0.4,
    overlay: SceneOverlay | None = None,
) -> np.ndarray:
    """Return a copy of ``rgb`` ``(H, W, 3) uint8`` with ``result`` (and ``overlay``'s zones
    and lines, under the boxes) drawn on it."""
    out = rgb.copy()
    if overlay:
        overlay.draw(out, result.stream_id)
    if result.masks.semantic is not None and result.masks.semantic.shape == out.shape[:2]:
        sem = result.masks.semantic
        overlay = _PALETTE[sem % len(_PALETTE)]
        fg = sem > 0
        out[fg] = (out[fg] * (1 - mask_alpha) + overlay[fg] * mask_alpha).astype(np.uint8)
    det = result.detections
    forecasts = {f.track_id: f for f in result.forecasts}
    for i in range(len(det)):
        x1, y1, x2, y2 = (int(round(v)) for v in det.xyxy[i])
        track = int(det.track_id[i]) if det.track_id is not None else -1
        color = color_for(track if track >= 0 else int(det.class_id[i]))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, 2)
        label = f"{result.class_name(int(det.class_id[i]))} {det.score[i]:.2f}"
        if track >= 0:
            label = f"#{track} " + label
            if track in forecasts:
                f = forecasts[track]
                label += f" -> {f.action} {f.p:.0%}"
        _label(out, label, x1, y1, color)
    for k in range(len(result.poses)):
        kp = result.poses.keypoints[k]
        track = int(result.poses.track_id[k]) if result.poses.track_id is not None else k
        color = color_for(track)
        for a, b in COCO17_SKELETON:
            if kp[a, 2] > 0.3 and kp[b, 2] > 0.3:
                pa = (int(kp[a, 0]), int(kp[a, 1]))
                pb = (int(kp[b, 0]), int(kp[b, 1]))
                cv2.line(out, pa, pb, color, 2, cv2.LINE_AA)
        for x, y, c in kp:
            if c > 0.3:
                cv2.circle(out, (int(x), int(y)), 3, (255, 255, 255), -1, cv2.LINE_AA)
    return out


def _label(img: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    y0 = max(y - th - base - 2, 0)
    cv2.rectangle(img, (x, y0), (x + tw + 4, y0 + th + base + 2), color, -1)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(
        img, text, (x + 2, y0 + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45, ink, 1, cv2.LINE_AA
    )
