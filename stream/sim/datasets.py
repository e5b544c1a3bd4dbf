"""Training and evaluation data for the sim perception model, drawn from the synthetic world.

:func:`render_annotated` renders a frame exactly as :func:`stream.sim.render.render_frame` does
(byte-identical pixels, the same boxes and keypoints) and also returns what that function keeps
to itself: each item's *visible* mask and the frame's person mask.

How the masks are made: :mod:`stream.sim.render` paints every figure and object through a
``Painter`` that draws the same primitives into the frame and into an ROI mask (the item's full
drawn extent, 255 where painted, anti-aliased edges in between). We paint the scene with its
:func:`~stream.sim.render.paint_scene`, the same far-to-near pass ``render_frame`` uses, and
resolve occlusion with a z-buffer: a pixel belongs to the nearest item
whose mask is >= 128 there. So a visible mask is exact to the pixel, and the semantic person mask
is the union of the figures' visible masks. Boxes stay the full drawn extent (as in
``render_frame``'s ground truth), even where a nearer thing covers part of the figure.

:func:`generate` adds variety for training: seeded backgrounds, several frame sizes, 1-6 figures
and 0-4 objects per frame (natural occlusion), optional random occluder patches drawn in front
(keypoints under them become occluded), then photometric changes: brightness / contrast / colour
gain, motion blur and sensor noise. :func:`to_canvas` rescales, shifts and crops a frame onto a
fixed-size canvas (scale augmentation) the way the model's letterbox does at zoom 1.

:func:`write_coco` writes COCO-format JSON (+ PNG images): ``bbox`` xywh, ``area`` = visible mask
pixels, ``segmentation`` uncompressed RLE (column-major, as pycocotools expects), ``keypoints``
flat ``[x, y, v] * 17`` with COCO's ``v`` (0 = outside the frame, written as 0, 0, 0; 1 =
occluded; 2 = visible), ``num_keypoints`` (count of v > 0); categories person (with COCO-17
names and skeleton, 1-based), ball, box, car (ids 1..4).

Coordinates: pixels, pixel-edge convention as in :mod:`stream.sim.world` (box ``x2`` exclusive).

CLI (``scripts/make_sim_dataset.py``)::

    .venv/bin/python scripts/make_sim_dataset.py --out /tmp/simcoco --n 200 --seed 0
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.coco17 import COCO17_KEYPOINTS, COCO17_SKELETON
from stream.sim.render import mask_box, paint_scene, visible
from stream.sim.scenes import make_scene
from stream.sim.world import CLASSES, Scene

#: Frame sizes (width, height) training scenes are rendered at; 16:9 most often.
TRAIN_SIZES: tuple[tuple[int, int], ...] = (
    (640, 360), (640, 360), (640, 360), (800, 450), (480, 270), (640, 480), (720, 405),
)  # fmt: skip
#: Scene seeds used for training are ``TRAIN_SEED_BASE + k``; held-out ones start elsewhere.
TRAIN_SEED_BASE = 100_000
#: Held-out scene seeds (evaluation, tests) are ``HELDOUT_SEED_BASE + k``; never trained on.
HELDOUT_SEED_BASE = 900_000
#: COCO category ids: ``CLASSES[i]`` has id ``i + 1``.
COCO_CATEGORY_IDS: dict[str, int] = {name: i + 1 for i, name in enumerate(CLASSES)}
#: Mask values (of 255) at or above which a pixel counts as painted by an item.
MASK_LEVEL = 128


@dataclass
class AnnotatedFrame:
    """One rendered frame with full ground truth.

    Attributes:
        image: ``(H, W, 3) uint8`` RGB.
        boxes: ``(n, 4) float32`` xyxy pixels (pixel-edge, x2/y2 exclusive), the item's full
            drawn extent inside the frame.
        labels: ``(n,) int64`` indices into :data:`stream.sim.world.CLASSES`.
        keypoints: ``(n, 17, 3) float32`` x, y pixels and COCO visibility v (0 = outside the
            frame, 1 = inside but covered by a nearer item, 2 = visible); x, y are the true joint
            positions even when v = 0. All zeros for non-person rows.
        masks: ``(n, H, W) bool`` visible pixels of each item (after occlusion).
        ids: ``(n,) int64`` ground-truth ids (figures 1..p, objects after them).
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    keypoints: np.ndarray
    masks: np.ndarray
    ids: np.ndarray

    @property
    def person_mask(self) -> np.ndarray:
        """``(H, W) bool``: pixels where a person is the nearest painted thing."""
        person = self.labels == CLASSES.index("person")
        if not person.any():
            return np.zeros(self.image.shape[:2], bool)
        return self.masks[person].any(axis=0)

    def __len__(self) -> int:
        return len(self.boxes)


def render_annotated(
    scene: Scene, frame_idx: int, *, occluders: Sequence[np.ndarray] = ()
) -> AnnotatedFrame:
    """Render frame ``frame_idx`` of ``scene`` with boxes, keypoints and visible masks.

    Without ``occluders`` the image, boxes and keypoint positions equal
    :func:`stream.sim.render.render_frame`'s, and v > 1 exactly where its visibility is 1.

    Args:
        scene: the world.
        frame_idx: frame number (time ``frame_idx / fps`` seconds).
        occluders: polygons ``(k, 2)`` float pixels, each painted in front of everything in a
            random-looking flat colour; they are not objects (no annotation) but hide what is
            under them.
    """
    W, H = scene.width, scene.height
    t = frame_idx / scene.fps
    frame, drawn = paint_scene(scene, t)  # exactly as render_frame paints
    for k, poly in enumerate(occluders):
        drawn.append(_draw_occluder(frame, np.asarray(poly, np.float64), k))

    # Z-buffer: the nearest layer whose mask is painted (>= MASK_LEVEL) owns the pixel.
    owner = np.full((H, W), -1, np.int32)
    for k, (_, x0, y0, mask, _) in enumerate(drawn):
        if mask is not None:
            sub = owner[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
            sub[mask >= MASK_LEVEL] = k

    boxes, labels, kps, masks, ids = [], [], [], [], []
    for k, (_, x0, y0, mask, entry) in enumerate(drawn):
        if entry.get("class") not in CLASSES:
            continue  # an occluder
        box = mask_box(mask, x0, y0)
        if box is None:
            continue
        keypoints = np.zeros((17, 3), np.float32)
        if entry["class"] == "person":
            kp = entry["kp"]
            vis = visible(kp, drawn[k + 1 :], W, H)
            inside = (np.floor(kp[:, 0]) >= 0) & (np.floor(kp[:, 0]) < W)
            inside &= (np.floor(kp[:, 1]) >= 0) & (np.floor(kp[:, 1]) < H)
            keypoints[:, :2] = kp[:, :2]
            keypoints[:, 2] = np.where(np.asarray(vis) > 0, 2, np.where(inside, 1, 0))
        boxes.append(box)
        labels.append(CLASSES.index(entry["class"]))
        kps.append(keypoints)
        masks.append(owner == k)
        ids.append(entry["id"])
    order = np.argsort(ids, kind="stable")
    n = len(ids)
    return AnnotatedFrame(
        image=frame,
        boxes=np.asarray(boxes, np.float32).reshape(n, 4)[order],
        labels=np.asarray(labels, np.int64).reshape(n)[order],
        keypoints=np.asarray(kps, np.float32).reshape(n, 17, 3)[order],
        masks=np.asarray(masks, bool).reshape(n, H, W)[order],
        ids=np.asarray(ids, np.int64).reshape(n)[order],
    )


def generate(
    n_frames: int,
    *,
    seed: int = 0,
    frames_per_scene: int = 3,
    sizes: Sequence[tuple[int, int]] = TRAIN_SIZES,
    seed_base: int = TRAIN_SEED_BASE,
    occluder_p: float = 0.25,
    photometric: bool = True,
) -> Iterator[AnnotatedFrame]:
    """Yield ``n_frames`` varied annotated frames; a pure function of the arguments.

    Scene ``k`` uses background/world seed ``seed_base + seed * 100_003 + k`` (so training
    scenes never collide with :data:`HELDOUT_SEED_BASE` ones for any practical ``seed``), a
    size from ``sizes``, 1-6 figures and 0-4 objects, and is 4-12 s long; ``frames_per_scene``
    frames are taken at random times. Each frame gets, with probability ``occluder_p``, 1-2
    occluder patches, then (``photometric``) :func:`photometric_augment`.
    """
    rng = np.random.default_rng([seed, 0x51D])
    k = 0
    made = 0
    while made < n_frames:
        W, H = sizes[int(rng.integers(len(sizes)))]
        duration = float(rng.uniform(4.0, 12.0))
        scene = make_scene(
            seed_base + seed * 100_003 + k,
            width=W,
            height=H,
            fps=15.0,
            duration_s=duration,
            n_people=int(rng.integers(1, 7)),
            n_objects=int(rng.integers(0, 5)),
        )
        k += 1
        for _ in range(min(frames_per_scene, n_frames - made)):
            idx = int(rng.integers(scene.n_frames))
            occ = []
            if rng.random() < occluder_p:
                occ = [random_occluder(rng, W, H) for _ in range(int(rng.integers(1, 3)))]
            frame = render_annotated(scene, idx, occluders=occ)
            if photometric:
                frame.image = photometric_augment(frame.image, rng)
            made += 1
            yield frame


def heldout_scenes(n_scenes: int, *, n_frames: int = 60, offset: int = 0) -> list[Scene]:
    """Scenes for evaluation: the demo's defaults (640x360, 15 fps, 3 people, 2 objects) with
    seeds ``HELDOUT_SEED_BASE + offset + k``, ``n_frames`` frames each."""
    return [
        make_scene(HELDOUT_SEED_BASE + offset + k, duration_s=n_frames / 15.0)
        for k in range(n_scenes)
    ]


def random_occluder(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A random convex-ish polygon ``(k, 2)`` pixels: 4-8 vertices, 5-20% of the frame height."""
    r = float(rng.uniform(0.05, 0.2)) * height
    cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0.3 * height, height))
    n = int(rng.integers(4, 9))
    ang = np.sort(rng.uniform(0, 2 * math.pi, n))
    rad = r * rng.uniform(0.6, 1.0, n)
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang) * 1.5], axis=1)


def photometric_augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness / contrast / per-channel gain, sometimes motion blur and sensor noise.

    ``(H, W, 3) uint8`` in, same shape out. Geometry is untouched, so annotations stay valid
    (motion blur smears edges by at most ~4 pixels).
    """
    img = image.astype(np.float32)
    gain = rng.uniform(0.9, 1.1, 3) * rng.uniform(0.7, 1.3)
    contrast = rng.uniform(0.75, 1.25)
    mean = img.mean()
    img = (img - mean) * contrast + mean
    img = img * gain + rng.uniform(-20, 20)
    if rng.random() < 0.3:
        length = int(rng.integers(3, 10))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < 0.5:
        img += rng.normal(0.0, rng.uniform(2, 10), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def to_canvas(
    frame: AnnotatedFrame,
    canvas_wh: tuple[int, int],
    *,
    zoom: float = 1.0,
    shift: tuple[int, int] = (0, 0),
) -> AnnotatedFrame:
    """Rescale ``frame`` by ``zoom * min(cw / W, ch / H)`` and place it at ``shift`` on a black
    ``canvas_wh = (cw, ch)`` canvas, cropping what falls outside.

    At ``zoom=1, shift=(0, 0)`` this is the letterbox :func:`models.ops.letterbox` applies
    (INTER_AREA when shrinking, pad right / bottom). Boxes are recomputed as the extent of the
    item's visible-or-covered pixels inside the canvas: the full box scaled and clipped, so a
    cropped figure keeps a tight box only approximately (within a pixel or two). Keypoints are
    mapped; a keypoint that leaves the canvas gets v = 0. Rows whose box vanishes are dropped.
    Masks are resampled (area) and thresholded at 0.5.
    """
    cw, ch = canvas_wh
    H, W = frame.image.shape[:2]
    s = zoom * min(cw / W, ch / H)
    nw, nh = max(1, int(round(W * s))), max(1, int(round(H * s)))
    sx, sy = nw / W, nh / H
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    ox, oy = int(shift[0]), int(shift[1])
    # Overlap of the resized frame [ox, ox + nw) x [oy, oy + nh) with the canvas.
    cx0, cy0, cx1, cy1 = max(ox, 0), max(oy, 0), min(ox + nw, cw), min(oy + nh, ch)
    image = np.zeros((ch, cw, 3), np.uint8)
    n = len(frame)
    masks = np.zeros((n, ch, cw), bool)
    if cx1 > cx0 and cy1 > cy0:
        small = cv2.resize(frame.image, (nw, nh), interpolation=interp)
        image[cy0:cy1, cx0:cx1] = small[cy0 - oy : cy1 - oy, cx0 - ox : cx1 - ox]
        for i in range(n):
            m = cv2.resize(frame.masks[i].astype(np.float32), (nw, nh), interpolation=interp)
            masks[i, cy0:cy1, cx0:cx1] = m[cy0 - oy : cy1 - oy, cx0 - ox : cx1 - ox] >= 0.5
    boxes = frame.boxes * np.array([sx, sy, sx, sy], np.float32) + np.array(
        [ox, oy, ox, oy], np.float32
    )
    boxes[:, 0::2] = boxes[:, 0::2].clip(cx0, cx1)
    boxes[:, 1::2] = boxes[:, 1::2].clip(cy0, cy1)
    kps = frame.keypoints.copy()
    kps[:, :, 0] = kps[:, :, 0] * sx + ox
    kps[:, :, 1] = kps[:, :, 1] * sy + oy
    inside = (kps[:, :, 0] >= cx0) & (kps[:, :, 0] < cx1)
    inside &= (kps[:, :, 1] >= cy0) & (kps[:, :, 1] < cy1)
    kps[:, :, 2] = np.where(inside, kps[:, :, 2], 0)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    return AnnotatedFrame(
        image=image,
        boxes=boxes[keep],
        labels=frame.labels[keep],
        keypoints=kps[keep],
        masks=masks[keep],
        ids=frame.ids[keep],
    )


# ---------------------------------------------------------------------------------------------
# COCO output
# ---------------------------------------------------------------------------------------------


def coco_categories() -> list[dict[str, Any]]:
    """COCO ``categories``: person (with keypoint names and 1-based skeleton), ball, box, car."""
    cats: list[dict[str, Any]] = []
    for name in CLASSES:
        cat: dict[str, Any] = {"id": COCO_CATEGORY_IDS[name], "name": name, "supercategory": name}
        if name == "person":
            cat["keypoints"] = list(COCO17_KEYPOINTS)
            cat["skeleton"] = [[a + 1, b + 1] for a, b in COCO17_SKELETON]
        cats.append(cat)
    return cats


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE of a ``(H, W) bool`` mask: column-major run lengths, zeros first."""
    h, w = mask.shape
    flat = np.asarray(mask, bool).ravel(order="F")
    if flat.size == 0:
        return {"size": [h, w], "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    counts = ([0] if flat[0] else []) + runs.tolist()
    return {"size": [int(h), int(w)], "counts": [int(c) for c in counts]}


def coco_annotations(
    frame: AnnotatedFrame, image_id: int, first_ann_id: int
) -> list[dict[str, Any]]:
    """COCO annotation dicts for one frame (ids from ``first_ann_id`` upward)."""
    anns = []
    for i in range(len(frame)):
        x1, y1, x2, y2 = (float(v) for v in frame.boxes[i])
        name = CLASSES[int(frame.labels[i])]
        ann: dict[str, Any] = {
            "id": first_ann_id + i,
            "image_id": image_id,
            "category_id": COCO_CATEGORY_IDS[name],
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "area": int(frame.masks[i].sum()),
            "segmentation": rle_encode(frame.masks[i]),
            "iscrowd": 0,
            "track_id": int(frame.ids[i]),
        }
        if name == "person":
            kp = frame.keypoints[i]
            flat: list[float] = []
            for x, y, v in kp:
                flat += [round(float(x), 2), round(float(y), 2), int(v)] if v > 0 else [0, 0, 0]
            ann["keypoints"] = flat
            ann["num_keypoints"] = int((kp[:, 2] > 0).sum())
        anns.append(ann)
    return anns


def write_coco(
    frames: Iterator[AnnotatedFrame] | Sequence[AnnotatedFrame],
    out_dir: str | Path,
    *,
    json_name: str = "annotations.json",
    write_images: bool = True,
) -> Path:
    """Write ``out_dir/images/000001.png ...`` and ``out_dir/<json_name>``; returns the JSON path.

    Image ids count from 1 in ``frames`` order; ``write_images=False`` writes the JSON only.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for image_id, frame in enumerate(frames, start=1):
        h, w = frame.image.shape[:2]
        name = f"images/{image_id:06d}.png"
        if write_images:
            cv2.imwrite(str(out / name), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
        images.append({"id": image_id, "file_name": name, "width": int(w), "height": int(h)})
        anns += coco_annotations(frame, image_id, len(anns) + 1)
    coco = {
        "info": {"description": "vigil synthetic world (stream.sim_dataset)", "version": "1"},
        "images": images,
        "annotations": anns,
        "categories": coco_categories(),
    }
    path = out / json_name
    path.write_text(json.dumps(coco, separators=(",", ":")))
    return path


# --- internals ----------------------------------------------------------------------------


def _draw_occluder(frame: np.ndarray, poly: np.ndarray, k: int):
    """Paint a flat polygon in front of everything; returns a layer like syn's painters do."""
    h, w = frame.shape[:2]
    x0 = max(int(math.floor(poly[:, 0].min())), 0)
    y0 = max(int(math.floor(poly[:, 1].min())), 0)
    x1 = min(int(math.ceil(poly[:, 0].max())) + 1, w)
    y1 = min(int(math.ceil(poly[:, 1].max())) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return (-1 - k, 0, 0, None, {"class": "occluder"})
    color = tuple(int(c) for c in (np.abs(poly[:3, 0] * 37 + poly[:3, 1] * 11) % 200 + 30))
    pts = np.round(poly * 16).astype(np.int32)[None]
    cv2.fillPoly(frame, pts, color, cv2.LINE_AA, 4)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, np.round((poly - [x0, y0]) * 16).astype(np.int32)[None], 255, cv2.LINE_AA, 4)
    return (-1 - k, x0, y0, mask, {"class": "occluder"})
