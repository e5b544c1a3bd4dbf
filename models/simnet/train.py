"""SimNet training: target encoding, left-right flip augmentation and the loss.

Imported only by ``scripts/train_sim.py`` and the tests, never by product code:
:func:`encode_targets` turns one letterboxed image's annotations into the heatmaps and
regression targets :class:`models.simnet.net.SimNet` learns; :func:`simnet_loss` scores its
outputs against them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from models.coco17 import FLIP_INDEX
from models.simnet.net import CLASS_NAMES, NUM_KEYPOINTS, PERSON, STRIDE

#: Up to this many objects per image are used as training targets.
MAX_OBJECTS = 32


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
