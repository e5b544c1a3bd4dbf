"""SimNet: the project's own small perception network, trained on the synthetic world.

One fully convolutional network gives, per frame, everything the offline demo needs:

- boxes for ``person, ball, box, car`` (CenterNet-style: a centre heatmap per class at stride 4,
  sub-cell centre offset, log box size);
- COCO-17 keypoints for each person (joint displacements regressed from the person's centre,
  snapped to the nearest peak of a per-joint heatmap with its own sub-cell offset);
- a person segmentation mask (logits at stride 2).

Backbone: a small ResNet-ish encoder (strides 2..32, 16..128 channels) with an FPN-style
top-down decoder to stride 4 (32 channels) and one more step to stride 2 for the mask. About
1.0 M parameters (3.9 MB as float32); roughly 1 GFLOP for a 320x192 input.

Frames of any size are letterboxed: scaled so the longer side is ``input_size`` pixels (320 by
default, INTER_AREA when shrinking), padded right / bottom with black to a multiple of 32. All
outputs are mapped back to the input frame's pixels.

:class:`SimPerception` is the inference stage; :func:`encode_targets` and :func:`simnet_loss`
are what ``scripts/train_sim.py`` trains it with. Weights ship in the repo at
``models/weights/sim/simnet.pt`` (registry entry ``simnet``, no download URL), made by
``scripts/train_sim.py``; ``models/weights/sim/simnet.json`` holds the training metadata.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import weights as weights_registry
from models.coco17 import COCO17_KEYPOINTS, FLIP_INDEX
from models.detection import check_detector_args, nms_detections
from models.ops import letterbox
from models.results import Detections, Masks, Poses
from models.weights import PACKS, WeightsEntry, WeightsError

#: Class names indexed by ``Detections.class_id`` (no background entry).
CLASS_NAMES: tuple[str, ...] = ("person", "ball", "box", "car")
PERSON = 0
NUM_KEYPOINTS = len(COCO17_KEYPOINTS)
#: Output stride of the heatmaps, pixels of the letterboxed input.
STRIDE = 4
#: Stride of the mask logits.
MASK_STRIDE = 2
#: Longer side, pixels, the frame is scaled to by default.
DEFAULT_INPUT_SIZE = 320
#: Letterboxed inputs are padded to a multiple of this (the encoder's deepest stride).
PAD_MULTIPLE = 32
#: The shipped weights and their metadata.
DEFAULT_WEIGHTS: Path = PACKS["sim"] / "simnet.pt"
DEFAULT_METADATA: Path = DEFAULT_WEIGHTS.with_suffix(".json")
#: sha256 of the shipped ``simnet.pt`` (a test checks the file against it).
SHIPPED_SHA256 = "4e63224567ac099f6cd984ffaff8993ca3afeb41f0f0e408206d497ba9f70704"
#: Up to this many objects per image are used as training targets.
MAX_OBJECTS = 32

_MEAN, _STD = 0.45, 0.25  # input normalisation, on [0, 1] pixel values


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------


class SimPerception:
    """Detect, segment and pose people (and balls, boxes, cars) with :class:`SimNet`.

    Args:
        weights: ``"auto"`` / ``"pretrained"`` (the shipped sim pack, or a ``simnet.pt`` placed in
            the weights cache, which takes precedence), ``"none"`` (random init, seeded: for
            tests), or a path to a state_dict file.
        device: torch device string.
        score_threshold: keep detections with score >= this, in [0, 1].
        iou_threshold: class-aware NMS IoU threshold, in [0, 1].
        classes: keep only detections of these names (from :attr:`class_names`); None keeps all.
            Poses follow the kept person rows; the person mask is unaffected.
        input_size: longer side in pixels the frame is scaled to (>= 64); None: the size the
            weights were trained at (320).
        max_detections: at most this many detections per frame, highest score first.

    Raises:
        WeightsError: the weights file is missing (names the path and the script that makes
            it), unreadable, or does not fit the network.
        ValueError: bad thresholds or unknown class names.
    """

    def __init__(
        self,
        *,
        weights: str = "auto",
        device: str = "cpu",
        score_threshold: float = 0.4,
        iou_threshold: float = 0.5,
        classes: list[str] | None = None,
        input_size: int | None = None,
        max_detections: int = 50,
    ) -> None:
        check_detector_args(score_threshold, iou_threshold, max_detections)
        if input_size is not None and input_size < 64:
            raise ValueError(f"input_size must be >= 64 pixels, got {input_size}")
        if classes is not None:
            if isinstance(classes, str):
                raise ValueError(f"classes must be a list of names, got the string {classes!r}")
            unknown = [c for c in classes if c not in CLASS_NAMES]
            if unknown:
                raise ValueError(f"unknown classes {unknown}; valid classes: {CLASS_NAMES}")
        self.class_names: tuple[str, ...] = CLASS_NAMES
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.input_size = int(input_size) if input_size is not None else DEFAULT_INPUT_SIZE
        self.device = torch.device(device)
        self._keep_classes = (
            None if classes is None else np.array([CLASS_NAMES.index(c) for c in classes])
        )
        net = ENTRY.build(seed=0)
        resolved = _resolve(weights)
        weights_registry.load_weights(net, resolved, name="simnet")
        self.model: SimNet = net.eval().to(self.device)  # type: ignore[assignment]
        self.weights_source: str = resolved.source
        self.description: str = _describe(resolved)
        """Which weights were loaded, one line for logs."""

    def __call__(self, frames: Sequence[np.ndarray]) -> list[tuple[Detections, Poses, Masks]]:
        """Run on a batch of frames in one forward pass.

        Args:
            frames: ``(H, W, 3) uint8 RGB`` arrays; sizes may differ.

        Returns:
            Per frame ``(detections, poses, masks)``: detections ``xyxy`` in that frame's pixels,
            sorted by score (descending), ``class_id`` indexing :attr:`class_names`; poses
            ``(p, 17, 3)`` (x, y pixels, confidence in [0, 1], COCO-17 order) where row ``i``
            belongs to the ``i``-th person row of the detections, i.e. to
            ``detections[detections.class_id == 0][i]`` (so ``len(poses)`` = number of persons);
            masks with ``semantic (H, W) uint8``: 1 = person, 0 = background.
        """
        if len(frames) == 0:
            return []
        boxed = [letterbox(_check_frame(f), self.input_size, PAD_MULTIPLE) for f in frames]
        ph = max(b[0].shape[0] for b in boxed)
        pw = max(b[0].shape[1] for b in boxed)
        batch = np.zeros((len(boxed), ph, pw, 3), np.uint8)
        for i, (img, _) in enumerate(boxed):
            batch[i, : img.shape[0], : img.shape[1]] = img
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        with torch.inference_mode():
            out = self.model(x)
            results = []
            for i, frame in enumerate(frames):
                H, W = frame.shape[:2]
                sx, sy = boxed[i][1]
                one = {k: v[i : i + 1] for k, v in out.items()}
                det, kps = decode(one, max_detections=4 * self.max_detections)
                det, kps = self._finish(det, kps, sx, sy, W, H)
                nh, nw = int(round(H * sy)), int(round(W * sx))
                mask = _mask_to_frame(one["mask"], nh, nw, H, W)
                results.append((det, kps, Masks(semantic=mask)))
        return results

    def __repr__(self) -> str:
        return f"SimPerception(device={str(self.device)!r}, weights={self.weights_source!r})"

    # --- internals ------------------------------------------------------------------------

    def _finish(
        self, det: Detections, kps: np.ndarray, sx: float, sy: float, W: int, H: int
    ) -> tuple[Detections, Poses]:
        """Threshold, filter classes, NMS, cap; map letterbox pixels to frame pixels."""
        keep = det.score >= self.score_threshold
        if self._keep_classes is not None:
            keep &= np.isin(det.class_id, self._keep_classes)
        det, kps = det[keep], kps[keep]
        scale = np.array([sx, sy, sx, sy], np.float32)
        xyxy = det.xyxy / scale
        xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, W)
        xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, H)
        kps = kps.copy()
        kps[..., 0] /= sx
        kps[..., 1] /= sy
        det = Detections(xyxy, det.score, det.class_id)
        if len(det):
            # Tag rows so the keypoints can follow NMS and sorting.
            tagged = Detections(det.xyxy, det.score, det.class_id, np.arange(len(det)))
            tagged = nms_detections(tagged, self.iou_threshold)[: self.max_detections]
            rows = tagged.track_id
            det = Detections(tagged.xyxy, tagged.score, tagged.class_id)
            kps = kps[rows]
        person = det.class_id == PERSON
        poses = Poses(kps[person]) if person.any() else Poses.empty()
        return det, poses


def decode(
    out: Mapping[str, torch.Tensor], *, max_detections: int = 100, min_score: float = 0.05
) -> tuple[Detections, np.ndarray]:
    """Turn one image's raw outputs into detections and person keypoints (before NMS).

    Args:
        out: :class:`SimNet` outputs for a batch of one.
        max_detections: the top-k centre peaks to consider.
        min_score: drop peaks below this.

    Returns:
        ``(detections, keypoints)`` in letterboxed-input pixels: ``keypoints (n, 17, 3)`` aligned
        with every detection row (zeros for non-person rows), x, y pixels and confidence.
    """
    heat = torch.sigmoid(out["heat"][0])  # (C, h, w)
    C, h, w = heat.shape
    peaks = heat * (F.max_pool2d(heat[None], 3, 1, 1)[0] == heat)
    k = min(max_detections, C * h * w)
    scores, idx = peaks.reshape(-1).topk(k)
    keep = scores >= min_score
    scores, idx = scores[keep], idx[keep]
    cls = idx // (h * w)
    pix = idx % (h * w)
    ys, xs = (pix // w).float(), (pix % w).float()
    off = out["offset"][0].reshape(2, -1)[:, pix]
    size = out["size"][0].reshape(2, -1)[:, pix].clamp(-3.0, 6.0).exp()
    cx, cy = xs + off[0], ys + off[1]
    bw, bh = size[0], size[1]
    xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * STRIDE
    n = len(scores)
    kps = torch.zeros((n, NUM_KEYPOINTS, 3))
    person = (cls == PERSON).nonzero().flatten()
    if len(person):
        reg = out["kp_reg"][0].reshape(NUM_KEYPOINTS, 2, -1)[:, :, pix[person]]  # (17, 2, p)
        jx = xs[person][None] + reg[:, 0]  # (17, p) output cells
        jy = ys[person][None] + reg[:, 1]
        size_p = torch.maximum(bw[person], bh[person])  # (p,) cells
        kx, ky, kc = _snap_joints(out, jx, jy, size_p)
        kps[person, :, 0] = kx.T * STRIDE
        kps[person, :, 1] = ky.T * STRIDE
        kps[person, :, 2] = kc.T
    det = Detections(
        xyxy=xyxy.numpy().astype(np.float32),
        score=scores.numpy().astype(np.float32),
        class_id=cls.numpy().astype(np.int64),
    )
    return det, kps.numpy().astype(np.float32)


def _snap_joints(
    out: Mapping[str, torch.Tensor], jx: torch.Tensor, jy: torch.Tensor, size: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move each regressed joint ``(17, p)`` (output cells) to the nearest peak of its own
    heatmap within ``0.15 * size`` cells (and nearer to it than any other person's joint);
    confidence = that peak's score, else half the
    heatmap value at the regressed point."""
    heat = torch.sigmoid(out["kp_heat"][0])  # (17, h, w)
    J, h, w = heat.shape
    peaks = heat * (F.max_pool2d(heat[None], 3, 1, 1)[0] == heat)
    k = min(20, h * w)
    ps, pi = peaks.reshape(J, -1).topk(k)  # (17, k)
    koff = out["kp_off"][0].reshape(J, 2, -1)
    px = (pi % w).float() + torch.gather(koff[:, 0], 1, pi)
    py = (pi // w).float() + torch.gather(koff[:, 1], 1, pi)
    d = torch.hypot(px[:, None, :] - jx[:, :, None], py[:, None, :] - jy[:, :, None])  # (17,p,k)
    # A peak may only serve the person whose regressed joint is nearest to it.
    nearest = d.argmin(dim=1, keepdim=True)  # (17, 1, k)
    mine = nearest == torch.arange(d.shape[1])[None, :, None]
    d = torch.where((ps[:, None, :] >= 0.1) & mine, d, torch.full_like(d, float("inf")))
    dmin, arg = d.min(dim=2)  # (17, p)
    snap = dmin <= 0.15 * size[None]
    sx = torch.gather(px, 1, arg)
    sy = torch.gather(py, 1, arg)
    sc = torch.gather(ps, 1, arg)
    ix = jx.round().long().clamp(0, w - 1)
    iy = jy.round().long().clamp(0, h - 1)
    at = heat[torch.arange(J)[:, None], iy, ix]
    return (
        torch.where(snap, sx, jx),
        torch.where(snap, sy, jy),
        torch.where(snap, sc, 0.5 * at),
    )


def _mask_to_frame(logits: torch.Tensor, nh: int, nw: int, H: int, W: int) -> np.ndarray:
    """Mask logits ``(1, 1, h2, w2)`` at stride 2 of the letterbox -> ``(H, W) uint8`` 0/1."""
    up = F.interpolate(logits, scale_factor=MASK_STRIDE, mode="bilinear", align_corners=False)
    up = up[:, :, :nh, :nw]
    full = F.interpolate(up, size=(H, W), mode="bilinear", align_corners=False)
    return (full[0, 0] > 0).cpu().numpy().astype(np.uint8)


def _check_frame(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", type(frame).__name__)
        raise ValueError(f"frames must be (H, W, 3) uint8 RGB arrays, got shape {shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frame.dtype}")
    return frame


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class _Residual(nn.Module):
    """Two 3x3 convs with an identity shortcut (``c`` channels in and out)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _cbr(c, c), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class SimNet(nn.Module):
    """Encoder-decoder with CenterNet-style heads (see the module docstring).

    ``forward(x)``: ``x (B, 3, H, W) float`` RGB in [0, 1], ``H``, ``W`` multiples of 32. Returns
    a dict of logits / regressions at stride 4 (``h = H / 4``, ``w = W / 4``) unless noted:

    - ``heat (B, 4, h, w)``: class centre heatmap logits;
    - ``offset (B, 2, h, w)``: centre minus its cell, cells;
    - ``size (B, 2, h, w)``: log of box width, height in cells;
    - ``kp_reg (B, 34, h, w)``: joint (x, y) minus the centre cell, cells, joint-major;
    - ``kp_heat (B, 17, h, w)``: joint heatmap logits;
    - ``kp_off (B, 34, h, w)``: joint minus its cell, cells, per joint (joint-major);
    - ``mask (B, 1, H / 2, W / 2)``: person mask logits.
    """

    def __init__(
        self,
        *,
        num_classes: int = len(CLASS_NAMES),
        num_keypoints: int = NUM_KEYPOINTS,
        widths: tuple[int, int, int, int, int] = (16, 32, 64, 96, 128),
        neck: int = 32,
        weights: Any = None,
        weights_backbone: Any = None,
    ) -> None:
        super().__init__()
        if weights is not None or weights_backbone is not None:
            raise ValueError("SimNet has no pretrained builder weights; load a state_dict")
        c2, c4, c8, c16, c32 = widths
        self.num_classes, self.num_keypoints = num_classes, num_keypoints
        self.s2 = _cbr(3, c2, 2)
        self.s4 = nn.Sequential(_cbr(c2, c4, 2), _cbr(c4, c4))
        self.s8 = nn.Sequential(_cbr(c4, c8, 2), _Residual(c8))
        self.s16 = nn.Sequential(_cbr(c8, c16, 2), _Residual(c16), _Residual(c16))
        self.s32 = nn.Sequential(_cbr(c16, c32, 2), _Residual(c32))
        self.lat = nn.ModuleList([nn.Conv2d(c, neck, 1) for c in (c4, c8, c16, c32)])
        self.smooth = nn.ModuleList([_cbr(neck, neck) for _ in range(3)])
        self.head = _cbr(neck, 64)
        self.head_out = nn.Conv2d(64, num_classes + 4 + 5 * num_keypoints, 1)
        self.mask_lat = nn.Conv2d(c2, 16, 1)
        self.mask_up = nn.Conv2d(neck, 16, 1)
        self.mask_branch = _cbr(16, 16)
        self.mask_out = nn.Conv2d(16, 1, 1)
        prior = -math.log((1 - 0.1) / 0.1)  # heatmaps start near p = 0.1 (focal-loss init)
        kp_heat0 = num_classes + 4 + 2 * num_keypoints
        with torch.no_grad():
            self.head_out.bias[:num_classes].fill_(prior)
            self.head_out.bias[kp_heat0 : kp_heat0 + num_keypoints].fill_(prior)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - _MEAN) / _STD
        f2 = self.s2(x)
        f4 = self.s4(f2)
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        p = self.lat[3](f32)
        for i, f in ((2, f16), (1, f8), (0, f4)):
            p = F.interpolate(p, size=f.shape[-2:], mode="nearest") + self.lat[i](f)
            p = self.smooth[i](p)
        d = self.head_out(self.head(p))
        m = F.interpolate(self.mask_up(p), size=f2.shape[-2:], mode="bilinear")
        m = self.mask_out(self.mask_branch(F.relu(m + self.mask_lat(f2))))
        C, J = self.num_classes, self.num_keypoints
        k0 = C + 4 + 2 * J
        return {
            "heat": d[:, :C],
            "offset": d[:, C : C + 2],
            "size": d[:, C + 2 : C + 4],
            "kp_reg": d[:, C + 4 : k0],
            "kp_heat": d[:, k0 : k0 + J],
            "kp_off": d[:, k0 + J :],
            "mask": m,
        }


def simnet(
    *, weights: Any = None, weights_backbone: Any = None, num_classes: int = len(CLASS_NAMES)
) -> SimNet:
    """Registry builder: a random-init :class:`SimNet`."""
    return SimNet(num_classes=num_classes, weights=weights, weights_backbone=weights_backbone)


# ---------------------------------------------------------------------------------------------
# Training: targets and loss
# ---------------------------------------------------------------------------------------------


def encode_targets(
    boxes: np.ndarray,
    labels: np.ndarray,
    keypoints: np.ndarray,
    person_mask: np.ndarray,
    input_hw: tuple[int, int],
) -> dict[str, np.ndarray]:
    """Training targets for one letterboxed image.

    Args:
        boxes: ``(n, 4)`` xyxy input pixels.
        labels: ``(n,)`` class ids (:data:`CLASS_NAMES`).
        keypoints: ``(n, 17, 3)`` x, y input pixels and COCO v (2 = visible); non-person rows
            are ignored. Joint positions are regressed for every v (they are known exactly).
        person_mask: ``(H / 2, W / 2)`` float in [0, 1] (area-downsampled person mask).
        input_hw: ``(H, W)`` of the input, multiples of 32.

    Returns:
        numpy arrays, ``h, w = H / 4, W / 4``, ``M`` = :data:`MAX_OBJECTS`: ``heat (4, h, w)``,
        ``kp_heat (17, h, w)``, ``ind (M,)`` flat centre cells, ``obj (M,)`` 1 for used slots,
        ``offset (M, 2)``, ``size (M, 2)`` log cells, ``kp_reg (M, 34)`` cells, ``is_person
        (M,)``, ``scale (M,)`` box longer side, cells; ``kp_ind (M * 17,)``, ``kp_obj (M * 17,)``,
        ``kp_off (M * 17, 2)``; ``mask (1, H / 2, W / 2)``.
    """
    H, W = input_hw
    h, w = H // STRIDE, W // STRIDE
    M, J = MAX_OBJECTS, NUM_KEYPOINTS
    t = {
        "heat": np.zeros((len(CLASS_NAMES), h, w), np.float32),
        "kp_heat": np.zeros((J, h, w), np.float32),
        "ind": np.zeros(M, np.int64),
        "obj": np.zeros(M, np.float32),
        "offset": np.zeros((M, 2), np.float32),
        "size": np.zeros((M, 2), np.float32),
        "kp_reg": np.zeros((M, 2 * J), np.float32),
        "is_person": np.zeros(M, np.float32),
        "scale": np.ones(M, np.float32),
        "kp_ind": np.zeros(M * J, np.int64),
        "kp_obj": np.zeros(M * J, np.float32),
        "kp_off": np.zeros((M * J, 2), np.float32),
        "mask": np.asarray(person_mask, np.float32)[None],
    }
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[:M]
    for slot, i in enumerate(order):
        x1, y1, x2, y2 = boxes[i] / STRIDE
        bw, bh = x2 - x1, y2 - y1
        if bw <= 0 or bh <= 0:
            continue
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        ci, cj = min(int(cx), w - 1), min(int(cy), h - 1)
        sig = (max(0.54 * bw / 6, 0.6), max(0.54 * bh / 6, 0.6))
        _draw_gaussian(t["heat"][int(labels[i])], ci, cj, sig)
        t["ind"][slot] = cj * w + ci
        t["obj"][slot] = 1.0
        t["offset"][slot] = (cx - ci, cy - cj)
        t["size"][slot] = (math.log(max(bw, 0.1)), math.log(max(bh, 0.1)))
        t["scale"][slot] = max(bw, bh, 1.0)
        if int(labels[i]) != PERSON:
            continue
        t["is_person"][slot] = 1.0
        kp = keypoints[i]
        kx, ky = kp[:, 0] / STRIDE, kp[:, 1] / STRIDE
        t["kp_reg"][slot, 0::2] = kx - ci
        t["kp_reg"][slot, 1::2] = ky - cj
        ksig = max(0.7, 0.025 * max(bw, bh))
        for j in range(J):
            if kp[j, 2] < 2:
                continue
            xi, yi = int(math.floor(kx[j])), int(math.floor(ky[j]))
            if not (0 <= xi < w and 0 <= yi < h):
                continue
            _draw_gaussian(t["kp_heat"][j], xi, yi, (ksig, ksig))
            t["kp_ind"][slot * J + j] = yi * w + xi
            t["kp_obj"][slot * J + j] = 1.0
            t["kp_off"][slot * J + j] = (kx[j] - xi, ky[j] - yi)
    return t


def flip_targets_input(
    image: np.ndarray,
    boxes: np.ndarray,
    keypoints: np.ndarray,
    person_mask: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mirror an ``(H, W, 3)`` image and its annotations left-right (joints swap sides)."""
    W = image.shape[1]
    boxes = boxes.copy()
    boxes[:, [0, 2]] = W - boxes[:, [2, 0]]
    kps = keypoints[:, list(FLIP_INDEX)].copy()
    kps[:, :, 0] = W - kps[:, :, 0]
    return image[:, ::-1].copy(), boxes, kps, person_mask[:, ::-1].copy()


def simnet_loss(
    out: Mapping[str, torch.Tensor], t: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Loss terms (each a scalar tensor) and their weighted sum under ``"total"``.

    Focal loss on both heatmaps (CenterNet's penalty-reduced variant), L1 on centre offsets and
    log sizes, L1 on joint displacements divided by the box's longer side (so every person
    counts alike, as PCK does), L1 on joint offsets, BCE + soft dice on the person mask.
    """
    n_obj = t["obj"].sum().clamp(min=1.0)
    heat = _focal(out["heat"], t["heat"])
    offset = (_gather(out["offset"], t["ind"]) - t["offset"]).abs().sum(-1)
    offset = (offset * t["obj"]).sum() / n_obj
    size = (_gather(out["size"], t["ind"]) - t["size"]).abs().sum(-1)
    size = (size * t["obj"]).sum() / n_obj
    n_person = t["is_person"].sum().clamp(min=1.0)
    kp_err = (_gather(out["kp_reg"], t["ind"]) - t["kp_reg"]).abs().sum(-1) / t["scale"]
    kp_reg = (kp_err * t["is_person"]).sum() / n_person
    kp_heat = _focal(out["kp_heat"], t["kp_heat"])
    n_kp = t["kp_obj"].sum().clamp(min=1.0)
    kp_off = (_gather_joints(out["kp_off"], t["kp_ind"]) - t["kp_off"]).abs().sum(-1)
    kp_off = (kp_off * t["kp_obj"]).sum() / n_kp
    logits, target = out["mask"], t["mask"]
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    mask = bce + dice.mean()
    terms = {
        "heat": heat,
        "offset": offset,
        "size": size,
        "kp_reg": kp_reg,
        "kp_heat": kp_heat,
        "kp_off": kp_off,
        "mask": mask,
    }
    weights = {"heat": 1.0, "offset": 1.0, "size": 1.0, "kp_reg": 2.0, "kp_heat": 1.0,
               "kp_off": 1.0, "mask": 2.0}  # fmt: skip
    terms["total"] = sum(weights[k] * v for k, v in terms.items())
    return terms


def _gather(x: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """``x (B, C, h, w)`` at flat cells ``ind (B, M)`` -> ``(B, M, C)``."""
    B, C = x.shape[:2]
    flat = x.reshape(B, C, -1)
    return torch.gather(flat, 2, ind[:, None, :].expand(B, C, ind.shape[1])).permute(0, 2, 1)


def _gather_joints(x: torch.Tensor, kp_ind: torch.Tensor) -> torch.Tensor:
    """Per-joint maps ``x (B, 2J, h, w)`` at cells ``kp_ind (B, M * J)`` (slot-major, joint
    ``j`` read from channels ``2j, 2j + 1``) -> ``(B, M * J, 2)``."""
    B, C, h, w = x.shape
    J = C // 2
    M = kp_ind.shape[1] // J
    flat = x.reshape(B, J, 2, h * w)
    ind = kp_ind.reshape(B, M, J).permute(0, 2, 1)  # (B, J, M)
    got = torch.gather(flat, 3, ind[:, :, None, :].expand(B, J, 2, M))  # (B, J, 2, M)
    return got.permute(0, 3, 1, 2).reshape(B, M * J, 2)


def _focal(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    pos_loss = (torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = (torch.log(1 - p) * p**2 * (1 - gt) ** 4 * (1 - pos)).sum()
    return -(pos_loss + neg_loss) / pos.sum().clamp(min=1.0)


def _draw_gaussian(plane: np.ndarray, cx: int, cy: int, sigma: tuple[float, float]) -> None:
    """Max-paint an axis-aligned Gaussian with peak 1 at cell ``(cx, cy)`` into ``plane``."""
    h, w = plane.shape
    rx, ry = int(3 * sigma[0]) + 1, int(3 * sigma[1]) + 1
    x0, x1 = max(cx - rx, 0), min(cx + rx + 1, w)
    y0, y1 = max(cy - ry, 0), min(cy + ry + 1, h)
    if x1 <= x0 or y1 <= y0:
        return
    xs = np.arange(x0, x1, dtype=np.float32) - cx
    ys = np.arange(y0, y1, dtype=np.float32) - cy
    g = np.exp(-(xs[None] ** 2) / (2 * sigma[0] ** 2) - ys[:, None] ** 2 / (2 * sigma[1] ** 2))
    np.maximum(plane[y0:y1, x0:x1], g, out=plane[y0:y1, x0:x1])


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    """Full hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_metadata(path: str | Path = DEFAULT_METADATA) -> dict[str, Any]:
    """The training metadata JSON beside the weights ({} if absent)."""
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else {}


def _resolve(spec: str) -> weights_registry.ResolvedWeights:
    spec = str(spec)
    if spec in ("auto", "pretrained"):
        resolved = weights_registry.resolve(ENTRY, "auto")
        if resolved.state_dict is None:
            raise WeightsError(
                f"simnet weights not found at {DEFAULT_WEIGHTS} (nor at {ENTRY.path}); make them "
                f"with `python scripts/train_sim.py` or pass weights='none' for random init"
            )
        return resolved
    return weights_registry.resolve(ENTRY, spec)


def _describe(resolved: weights_registry.ResolvedWeights) -> str:
    if resolved.source == "pack:sim":
        seeds, meta = [], load_metadata()
        while isinstance(meta, dict) and "seed" in meta:  # each stage names the one it began from
            seeds.insert(0, str(meta["seed"]))
            meta = meta.get("init")
        how = "trained by scripts/train_sim.py"
        if len(seeds) > 1:
            how += f" in {len(seeds)} stages, seeds {', '.join(seeds)}"
        elif seeds:
            how += f" seed {seeds[0]}"
        try:
            rel = DEFAULT_WEIGHTS.relative_to(Path(__file__).resolve().parents[1])
        except ValueError:
            rel = DEFAULT_WEIGHTS
        return f"sim pack ({rel}, {how})"
    return resolved.description


#: The registry entry. The file ships in the repo (``models/weights/sim/simnet.pt``), so there is
#: no URL; ``resolve("simnet", "auto")`` finds it through the ``sim`` pack.
ENTRY = WeightsEntry(
    name="simnet",
    task="detection",
    url="",
    sha256=SHIPPED_SHA256,
    file_name="simnet.pt",
    builder=simnet,
    categories=CLASS_NAMES,
    preprocessing={
        "input": "RGB uint8 (H, W, 3), any size",
        "letterbox": f"longer side -> {DEFAULT_INPUT_SIZE} px (INTER_AREA), pad right/bottom "
        f"to a multiple of {PAD_MULTIPLE}",
        "normalise": {"mean": _MEAN, "std": _STD, "on": "[0, 1]"},
    },
    license="Apache-2.0 (trained by this project on its synthetic world)",
    notes="shipped in the repo (no download URL); made by scripts/train_sim.py; outputs boxes, "
    "COCO-17 keypoints and a person mask; see models/simnet.py",
)
if ENTRY.name not in weights_registry.REGISTRY:
    weights_registry.register(ENTRY)
