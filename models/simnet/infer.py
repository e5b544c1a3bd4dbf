"""SimNet inference: :class:`SimPerception` (frames in, detections, poses and masks out), the
decoding of raw outputs, and the weights entry.

Frames of any size are letterboxed: scaled so the longer side is ``input_size`` pixels (320 by
default, INTER_AREA when shrinking), padded right / bottom with black to a multiple of 32. All
outputs are mapped back to the input frame's pixels.

Weights ship in the repo at ``models/weights/sim/simnet.pt`` (registry entry ``simnet``, no
download URL, registered when this module is imported), made by ``scripts/train_sim.py``;
``models/weights/sim/simnet.json`` holds the training metadata.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models import weights as weights_registry
from models.detection import check_detector_args, nms_detections
from models.ops import letterbox
from models.results import Detections, Masks, Poses
from models.runtime.upload import check_frame
from models.simnet.net import (
    CLASS_NAMES,
    DEFAULT_INPUT_SIZE,
    MASK_STRIDE,
    MEAN,
    NUM_KEYPOINTS,
    PAD_MULTIPLE,
    PERSON,
    STD,
    STRIDE,
    SimNet,
    simnet,
)
from models.weights import PACKS, WeightsEntry, WeightsError

#: The shipped weights and their metadata.
DEFAULT_WEIGHTS: Path = PACKS["sim"] / "simnet.pt"
DEFAULT_METADATA: Path = DEFAULT_WEIGHTS.with_suffix(".json")
#: sha256 of the shipped ``simnet.pt`` (a test checks the file against it).
SHIPPED_SHA256 = "4e63224567ac099f6cd984ffaff8993ca3afeb41f0f0e408206d497ba9f70704"


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
        for f in frames:
            check_frame(f)
        boxed = [letterbox(f, self.input_size, PAD_MULTIPLE) for f in frames]
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
            rel = DEFAULT_WEIGHTS.relative_to(Path(__file__).resolve().parents[2])
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
        "normalise": {"mean": MEAN, "std": STD, "on": "[0, 1]"},
    },
    license="Apache-2.0 (trained by this project on its synthetic world)",
    notes="shipped in the repo (no download URL); made by scripts/train_sim.py; outputs boxes, "
    "COCO-17 keypoints and a person mask; see models/simnet/",
)
if ENTRY.name not in weights_registry.REGISTRY:
    weights_registry.register(ENTRY)
