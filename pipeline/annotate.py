"""Draw a FrameResult onto its frame: boxes, labels, track ids, skeletons, forecasts, masks."""

from __future__ import annotations

import cv2
import numpy as np

from models.results import COCO17_SKELETON, FrameResult

_PALETTE = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 190),
        (0, 128, 128),
        (170, 110, 40),
    ],
    dtype=np.uint8,
)


def color_for(key: int) -> tuple[int, int, int]:
    """A stable RGB colour for a class id or track id."""
    c = _PALETTE[int(key) % len(_PALETTE)]
    return int(c[0]), int(c[1]), int(c[2])


def annotate(rgb: np.ndarray, result: FrameResult, *, mask_alpha: float = 0.4) -> np.ndarray:
    """Return a copy of ``rgb`` ``(H, W, 3) uint8`` with ``result`` drawn on it."""
    out = rgb.copy()
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
