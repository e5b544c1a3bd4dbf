"""Pixels of the synthetic world: a scene's frame at an index, with its exact ground truth.

:func:`render_frame` paints the seeded room (:func:`background`), then every figure and object
far to near (painter's order); each is painted through a :class:`Painter` that draws the same
primitives into the frame and into a mask, so boxes and keypoint visibility come from the
pixels actually drawn. The other public helpers let :mod:`stream.sim.datasets` render the same
frame with masks.

Ground truth of one frame: ``{"frame", "pts" (seconds), "objects": [{"id", "class", "box":
[x1, y1, x2, y2], "keypoints": [[x, y, v], ...17], "action"}, ...]}`` (keypoints and action
for people only). A keypoint's ``v`` is 1 when it lies inside the frame and is not covered by a
nearer figure or object, else 0.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from stream.sim.motion import HEAD_R, pose_and_facing
from stream.sim.world import HORIZON_FRAC, FigureScript, Scene, SceneObject, action_at

_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA


def render_frame(scene: Scene, frame_idx: int) -> tuple[np.ndarray, dict]:
    """Render one frame and its ground truth.

    Returns:
        ``(H, W, 3) uint8`` RGB frame, and the frame's ground-truth dict
        ``{"frame", "pts" (seconds), "objects": [...]}`` as in the module docstring; objects are
        sorted by id, and those entirely outside the frame are left out.
    """
    t = frame_idx / scene.fps
    frame, drawn = paint_scene(scene, t)

    objects = []
    for k, (_, x0, y0, mask, entry) in enumerate(drawn):
        box = mask_box(mask, x0, y0)
        if box is None:
            continue
        out: dict[str, Any] = {"id": entry["id"], "class": entry["class"], "box": box}
        if entry["class"] == "person":
            kp = entry["kp"]
            vis = visible(kp, drawn[k + 1 :], scene.width, scene.height)
            out["keypoints"] = [
                [round(float(x), 2), round(float(y), 2), int(v)]
                for (x, y, _), v in zip(kp, vis, strict=True)
            ]
            out["action"] = entry["action"]
        objects.append(out)
    objects.sort(key=lambda o: o["id"])
    return frame, {"frame": int(frame_idx), "pts": round(t, 6), "objects": objects}


#: One painted item, far to near: ``(id, roi_x0, roi_y0, mask or None, entry)``; ``entry`` has
#: ``id`` and ``class``, and for a person ``kp`` (keypoints) and ``action``.
Layer = tuple[int, int, int, np.ndarray | None, dict]


def paint_scene(scene: Scene, t: float) -> tuple[np.ndarray, list[Layer]]:
    """Paint the background and every figure and object at ``t`` seconds, far to near.

    Returns the ``(H, W, 3) uint8`` RGB frame and one :data:`Layer` per item in painting order.
    """
    frame = background(scene.seed, scene.width, scene.height).copy()
    items: list[tuple[float, int, Any]] = [(fig.ground_y, 0, fig) for fig in scene.figures]
    items += [(obj.ground_y, 1, obj) for obj in scene.objects]
    items.sort(key=lambda it: (it[0], it[1], item_id(it[2])))  # far to near: painter's order

    drawn: list[Layer] = []
    for _, _, item in items:
        if isinstance(item, FigureScript):
            kp, facing = pose_and_facing(item, t)
            x0, y0, mask = draw_figure(frame, item, kp, facing)
            entry = {
                "id": item.figure_id,
                "class": "person",
                "kp": kp,
                "action": action_at(item, t),
            }
        else:
            x0, y0, mask = draw_object(frame, item, t)
            entry = {"id": item.object_id, "class": item.kind}
        drawn.append((item_id(item), x0, y0, mask, entry))
    return frame, drawn


def item_id(item: FigureScript | SceneObject) -> int:
    return item.figure_id if isinstance(item, FigureScript) else item.object_id


def mask_box(mask: np.ndarray | None, x0: int, y0: int) -> list[float] | None:
    if mask is None:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return [
        float(x0 + cols[0]),
        float(y0 + rows[0]),
        float(x0 + cols[-1] + 1),
        float(y0 + rows[-1] + 1),
    ]


def visible(kp: np.ndarray, later: list, width: int, height: int) -> list[int]:
    """1 where a keypoint is inside the frame and not under a later-drawn (nearer) item."""
    vis = []
    for x, y, _ in kp:
        xi, yi = math.floor(x), math.floor(y)
        v = 0 <= xi < width and 0 <= yi < height
        if v:
            for _, ox, oy, mask, _ in later:
                if mask is None:
                    continue
                r, c = yi - oy, xi - ox
                if 0 <= r < mask.shape[0] and 0 <= c < mask.shape[1] and mask[r, c]:
                    v = False
                    break
        vis.append(int(v))
    return vis


def _roi(frame: np.ndarray, xs: np.ndarray, ys: np.ndarray, margin: float):
    """Integer ROI ``(x0, y0, x1, y1)`` around points, clipped to the frame; None if empty."""
    h, w = frame.shape[:2]
    x0 = max(int(math.floor(float(xs.min()) - margin)), 0)
    y0 = max(int(math.floor(float(ys.min()) - margin)), 0)
    x1 = min(int(math.ceil(float(xs.max()) + margin)) + 1, w)
    y1 = min(int(math.ceil(float(ys.max()) + margin)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


class Painter:
    """Draws the same primitives into the frame and into an ROI mask (255 wherever drawn)."""

    def __init__(self, frame: np.ndarray, roi: tuple[int, int, int, int]):
        self.frame = frame
        self.x0, self.y0 = roi[0], roi[1]
        self.mask = np.zeros((roi[3] - roi[1], roi[2] - roi[0]), dtype=np.uint8)

    def _p(self, x: float, y: float, ox: int = 0, oy: int = 0) -> tuple[int, int]:
        return int(round((x - ox) * _ONE)), int(round((y - oy) * _ONE))

    def line(self, a, b, color, thickness: int) -> None:
        t = max(int(thickness), 1)
        cv2.line(self.frame, self._p(*a), self._p(*b), color, t, _AA, _SHIFT)
        pa, pb = self._p(*a, self.x0, self.y0), self._p(*b, self.x0, self.y0)
        cv2.line(self.mask, pa, pb, 255, t, _AA, _SHIFT)

    def circle(self, c, r: float, color, mask: bool = True) -> None:
        rr = max(int(round(r * _ONE)), _ONE // 2)
        cv2.circle(self.frame, self._p(*c), rr, color, -1, _AA, _SHIFT)
        if mask:
            cv2.circle(self.mask, self._p(*c, self.x0, self.y0), rr, 255, -1, _AA, _SHIFT)

    def poly(self, pts, color) -> None:
        fp = np.array([[self._p(x, y) for x, y in pts]], dtype=np.int32)
        mp = np.array([[self._p(x, y, self.x0, self.y0) for x, y in pts]], dtype=np.int32)
        cv2.fillPoly(self.frame, fp, color, _AA, _SHIFT)
        cv2.fillPoly(self.mask, mp, 255, _AA, _SHIFT)


def _shade(color: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    return tuple(int(min(max(c * k, 0), 255)) for c in color)  # type: ignore[return-value]


def draw_figure(frame: np.ndarray, fig: FigureScript, kp: np.ndarray, facing: int):
    """Paint one person; returns ``(roi_x0, roi_y0, mask)`` (mask None if off-frame)."""
    H = fig.height_px
    roi = _roi(frame, kp[:, 0], kp[:, 1], 0.12 * H + 3)
    if roi is None:
        return 0, 0, None
    pen = Painter(frame, roi)
    P = [(float(x), float(y)) for x, y, _ in kp]
    leg_t = max(2, round(0.05 * H))
    arm_t = max(2, round(0.036 * H))
    shoe = (35, 35, 40)
    # Legs and shoes.
    for hip, knee, ankle in ((11, 13, 15), (12, 14, 16)):
        pen.line(P[hip], P[knee], fig.pants, leg_t)
        pen.line(P[knee], P[ankle], fig.pants, leg_t)
        dx, dy = P[ankle][0] - P[knee][0], P[ankle][1] - P[knee][1]
        n = math.hypot(dx, dy) or 1.0
        toe = (P[ankle][0] + 0.055 * H * facing * dy / n, P[ankle][1] - 0.055 * H * facing * dx / n)
        pen.line(P[ankle], toe, shoe, max(2, round(0.035 * H)))
    # Torso: shirt polygon over shoulders and hips, plus a thick spine so it keeps body when
    # turned sideways.
    sh_mid = ((P[5][0] + P[6][0]) / 2, (P[5][1] + P[6][1]) / 2)
    hip_mid = ((P[11][0] + P[12][0]) / 2, (P[11][1] + P[12][1]) / 2)
    pen.poly([P[5], P[6], P[12], P[11]], fig.color)
    pen.line(sh_mid, hip_mid, fig.color, max(3, round(0.1 * H)))
    pen.line(P[11], P[12], fig.pants, leg_t)  # belt line joins the trousers
    # Arms: sleeve, bare forearm, hand.
    for sh, el, wr in ((5, 7, 9), (6, 8, 10)):
        pen.line(P[sh], P[el], fig.color, arm_t)
        pen.line(P[el], P[wr], fig.skin, max(2, round(0.8 * arm_t)))
        pen.circle(P[wr], 0.025 * H, fig.skin)
    # Neck and head: hair circle, face circle shifted down inside it, eyes.
    head = ((P[3][0] + P[4][0]) / 2, (P[3][1] + P[4][1]) / 2)
    ux, uy = head[0] - sh_mid[0], head[1] - sh_mid[1]
    n = math.hypot(ux, uy) or 1.0
    ux, uy = ux / n, uy / n
    pen.line(sh_mid, head, fig.skin, max(2, round(0.045 * H)))
    r = HEAD_R * H
    pen.circle(head, r, fig.hair)
    pen.circle((head[0] - 0.12 * r * ux, head[1] - 0.12 * r * uy), 0.86 * r, fig.skin, mask=False)
    if H >= 80:
        for eye in (P[1], P[2]):
            pen.circle(eye, max(1.0, 0.009 * H), (30, 30, 30), mask=False)
    return pen.x0, pen.y0, pen.mask


def _object_x(obj: SceneObject, t: float, width: int) -> float:
    """Horizontal centre at ``t``: balls bounce between the edges, cars wrap round."""
    u = obj.x0 + obj.speed_px_s * t
    if obj.kind == "ball":
        r = obj.size_px / 2
        lo, span = r, max(width - 2 * r, 1.0)
        m = (u - lo) % (2 * span)
        return lo + (m if m <= span else 2 * span - m)
    if obj.kind == "car":
        period = width + 1.5 * obj.size_px
        return (u + 0.75 * obj.size_px) % period - 0.75 * obj.size_px
    return obj.x0


def draw_object(frame: np.ndarray, obj: SceneObject, t: float):
    """Paint one object; returns ``(roi_x0, roi_y0, mask)`` (mask None if off-frame)."""
    width = frame.shape[1]
    cx, g, s = _object_x(obj, t, width), obj.ground_y, obj.size_px
    if obj.kind == "ball":
        r = s / 2
        roi = _roi(frame, np.array([cx - r, cx + r]), np.array([g - s, g]), 3)
        if roi is None:
            return 0, 0, None
        pen = Painter(frame, roi)
        c = (cx, g - r)
        pen.circle(c, r, obj.color)
        ang = (_object_x(obj, t, width) - obj.x0) / max(r, 1.0)  # rolling without slipping
        a = (c[0] + 0.8 * r * math.cos(ang), c[1] + 0.8 * r * math.sin(ang))
        b = (c[0] - 0.8 * r * math.cos(ang), c[1] - 0.8 * r * math.sin(ang))
        pen.line(a, b, (245, 245, 245), max(1, round(0.22 * r)))
        pen.circle((c[0] - 0.35 * r, c[1] - 0.35 * r), 0.18 * r, _shade(obj.color, 1.4), mask=False)
        return pen.x0, pen.y0, pen.mask
    if obj.kind == "box":
        w, h = s, 0.75 * s
        dx, dy = 0.18 * w, 0.22 * h  # receding top face
        x1, x2, y1 = cx - w / 2, cx + w / 2, g - h
        roi = _roi(frame, np.array([x1, x2 + dx]), np.array([y1 - dy, g]), 3)
        if roi is None:
            return 0, 0, None
        pen = Painter(frame, roi)
        pen.poly(
            [(x1, y1), (x2, y1), (x2 + dx, y1 - dy), (x1 + dx, y1 - dy)], _shade(obj.color, 1.25)
        )
        pen.poly([(x2, y1), (x2 + dx, y1 - dy), (x2 + dx, g - dy), (x2, g)], _shade(obj.color, 0.7))
        pen.poly([(x1, y1), (x2, y1), (x2, g), (x1, g)], obj.color)
        edge, tk = _shade(obj.color, 0.45), max(1, round(0.03 * w))
        pen.line((x1, y1), (x2, y1), edge, tk)
        pen.line((x1, g), (x2, g), edge, tk)
        pen.line(((x1 + x2) / 2, y1), ((x1 + x2) / 2, g), (200, 180, 120), max(1, round(0.1 * w)))
        return pen.x0, pen.y0, pen.mask
    # car: body, cabin with windows, wheels, a headlight at the front
    L = s
    front = 1 if obj.speed_px_s >= 0 else -1
    roi = _roi(frame, np.array([cx - L / 2, cx + L / 2]), np.array([g - 0.56 * L, g]), 3)
    if roi is None:
        return 0, 0, None
    pen = Painter(frame, roi)
    body_top, body_bot = g - 0.33 * L, g - 0.09 * L
    pen.poly(
        [
            (cx - 0.5 * L, body_top),
            (cx + 0.5 * L, body_top),
            (cx + 0.5 * L, body_bot),
            (cx - 0.5 * L, body_bot),
        ],
        obj.color,
    )

    def outline(fx: tuple[float, ...], fy: tuple[float, ...]) -> list[tuple[float, float]]:
        """Points at ``cx + front * fx * L``, ``g - fy * L`` (units of car length)."""
        return [(cx + front * a * L, g - b * L) for a, b in zip(fx, fy, strict=True)]

    pen.poly(outline((-0.3, -0.2, 0.15, 0.3), (0.33, 0.53, 0.53, 0.33)), obj.color)
    win = outline((-0.25, -0.18, 0.13, 0.24), (0.35, 0.5, 0.5, 0.35))
    pen.poly(win, (170, 200, 225))
    pen.line(
        (cx - 0.02 * front * L, body_top),
        (cx - 0.02 * front * L, g - 0.52 * L),
        obj.color,
        max(1, round(0.03 * L)),
    )
    lamp = cx + front * 0.47 * L
    pen.line(
        (lamp, body_top + 0.06 * L),
        (lamp, body_top + 0.1 * L),
        (250, 230, 120),
        max(1, round(0.04 * L)),
    )
    for wx in (cx - 0.3 * L, cx + 0.3 * L):
        pen.circle((wx, g - 0.1 * L), 0.1 * L, (25, 25, 28))
        pen.circle((wx, g - 0.1 * L), 0.045 * L, (170, 170, 175), mask=False)
    return pen.x0, pen.y0, pen.mask


@lru_cache(maxsize=8)
def background(seed: int, width: int, height: int) -> np.ndarray:
    """The seeded room behind everything: ``(H, W, 3) uint8`` RGB, read-only (cached).

    Back wall (vertical gradient, smooth multi-scale noise, posters/windows, a skirting board)
    over a floor of perspective tiles.
    """
    rng = np.random.default_rng([seed, 0xB6])  # its own stream: scripts don't shift it
    H, W = height, width
    hz = int(round(HORIZON_FRAC * H))
    img = np.zeros((H, W, 3), np.float32)

    walls = ((205, 195, 175), (180, 195, 205), (215, 205, 185), (190, 200, 180), (200, 185, 190))
    wall = np.array(walls[int(rng.integers(len(walls)))], np.float32)
    ys = np.linspace(0.0, 1.0, max(hz, 1), dtype=np.float32)[:, None, None]
    img[:hz] = wall * (0.82 + 0.22 * ys)

    # Floor: a checker of tiles seen in perspective, rendered at 2x and area-downsampled.
    floors = (((165, 140, 110), (120, 95, 70)), ((170, 170, 175), (115, 115, 125)),
              ((150, 160, 140), (100, 110, 95)))  # fmt: skip
    light, dark = (np.array(c, np.float32) for c in floors[int(rng.integers(len(floors)))])
    fh = H - hz
    if fh > 0:
        ss = 2
        yy = (np.arange(fh * ss, dtype=np.float32) + 0.5) / ss + 0.5  # rows below the horizon
        xx = (np.arange(W * ss, dtype=np.float32) + 0.5) / ss
        tile_px = 0.16 * W  # tile width at the bottom edge
        scale = tile_px * yy / fh  # screen pixels per tile at each row
        wx = (xx[None, :] - W / 2 + rng.uniform(0, tile_px)) / scale[:, None]
        wz = fh * fh / (0.5 * tile_px * yy)  # depth in tiles
        check = ((np.floor(wx) + np.floor(wz)[:, None]) % 2).astype(np.float32)
        check = cv2.resize(check, (W, fh), interpolation=cv2.INTER_AREA)[..., None]
        fade = np.clip(np.arange(fh, dtype=np.float32)[:, None, None] / (0.6 * fh) + 0.35, 0, 1)
        img[hz:] = (dark + (light - dark) * check) * (0.75 + 0.25 * fade)

    # Wall decorations: posters and windows with frames.
    for _ in range(int(rng.integers(2, 5))):
        pw, ph = rng.uniform(0.06, 0.16) * W, rng.uniform(0.12, 0.28) * H
        px, py = rng.uniform(0, W - pw), rng.uniform(0.04 * H, max(hz - ph - 0.04 * H, 0.05 * H))
        x1, y1, x2, y2 = int(px), int(py), int(px + pw), int(py + ph)
        c1, c2 = rng.uniform(40, 230, size=3), rng.uniform(40, 230, size=3)
        g = np.linspace(0.0, 1.0, max(y2 - y1, 1), dtype=np.float32)[:, None, None]
        img[y1:y2, x1:x2] = c1 + (c2 - c1) * g
        cv2.rectangle(img, (x1, y1), (x2, y2), (70.0, 60.0, 50.0), max(1, W // 320))
    cv2.rectangle(img, (0, hz - max(2, H // 60)), (W, hz), (95.0, 85.0, 75.0), -1)  # skirting

    # Smooth multi-scale noise everywhere, plus faint grain.
    noise = np.zeros((H, W), np.float32)
    for cells, amp in ((5, 9.0), (14, 5.0), (48, 3.0)):
        small = rng.standard_normal((cells, max(2, cells * W // H))).astype(np.float32)
        noise += amp * cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)
    noise += 2.0 * rng.standard_normal((H, W)).astype(np.float32)
    img += noise[..., None]
    out = np.clip(img, 0, 255).astype(np.uint8)
    out.flags.writeable = False
    return out
