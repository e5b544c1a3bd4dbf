"""Small array operations shared by the models: box IoU, one-to-one matching, letterboxing.

NumPy at import time (SciPy and OpenCV are imported by the functions that use them), so the
weights registry, trackers and evaluation scripts share these definitions without importing
torch.
"""

from __future__ import annotations

import numpy as np

#: ImageNet normalisation (RGB, 0..1 scale) of torchvision's and OpenPifPaf's backbones.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes.

    Args:
        a: ``(n, 4)`` xyxy boxes, pixels.
        b: ``(m, 4)`` xyxy boxes, pixels.

    Returns:
        ``(n, m) float64`` IoU in [0, 1]; ``(n, 0)`` or ``(0, m)`` for empty input.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_max(score: np.ndarray, min_score: float) -> list[tuple[int, int]]:
    """One-to-one assignment maximising the summed ``score`` (Hungarian).

    Args:
        score: ``(n, m)`` affinity (IoU or similar); larger is better.
        min_score: pairs scoring below it are dropped after the assignment.

    Returns:
        ``(row, col)`` pairs, by row.
    """
    from scipy.optimize import linear_sum_assignment

    score = np.asarray(score, np.float64)
    if score.size == 0:
        return []
    rows, cols = linear_sum_assignment(-score)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if score[r, c] >= min_score]


def match_boxes(a: np.ndarray, b: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """One-to-one matching of xyxy boxes ``a`` to ``b`` by IoU (>= ``min_iou``)."""
    return match_max(box_iou(a, b), min_iou)


def letterbox(
    frame: np.ndarray, input_size: int, pad_multiple: int = 32
) -> tuple[np.ndarray, tuple[float, float]]:
    """Scale ``frame`` so its longer side is ``input_size`` and pad right / bottom with black.

    Args:
        frame: ``(H, W, 3) uint8``.
        input_size: pixels.

    Returns:
        ``(canvas, (sx, sy))``: ``canvas (h, w, 3) uint8`` with ``h``, ``w`` multiples of
        ``pad_multiple``; a frame point ``(x, y)`` is at ``(x * sx, y * sy)`` on the canvas.
    """
    import cv2

    H, W = frame.shape[:2]
    s = input_size / max(H, W)
    nw, nh = max(1, int(round(W * s))), max(1, int(round(H * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    img = frame if (nw, nh) == (W, H) else cv2.resize(frame, (nw, nh), interpolation=interp)
    ph = -(-nh // pad_multiple) * pad_multiple
    pw = -(-nw // pad_multiple) * pad_multiple
    canvas = np.zeros((ph, pw, 3), np.uint8)
    canvas[:nh, :nw] = img
    return canvas, (nw / W, nh / H)
