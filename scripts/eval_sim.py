"""Evaluate SimPerception on held-out synthetic video; print a table and one JSON line.

Examples::

    .venv/bin/python scripts/eval_sim.py            # 4 held-out scenes x 60 frames
    .venv/bin/python scripts/eval_sim.py --quick    # 2 scenes x 30 frames
    .venv/bin/python scripts/eval_sim.py --weights /tmp/simnet.pt

Held-out scenes are the demo's defaults (640x360, 3 people, 2 objects, 15 fps) with seeds
``stream.sim.datasets.HELDOUT_SEED_BASE + k``, which training never uses. Figures:

- ``person_ap50``: COCO box AP at IoU 0.5 for persons (pycocotools; detections down to score
  0.05), plus ``map50`` over all four classes;
- ``person_recall50`` / ``person_precision50``: at the operating score threshold (0.4), greedy
  one-to-one matching at IoU >= 0.5;
- ``mask_iou``: person mask IoU per frame (predicted ``Masks.semantic == 1`` vs the visible
  person pixels), averaged over frames;
- ``pck10``: fraction of visible ground-truth keypoints (v = 2) within ``0.1 * max(w, h)`` of
  the ground-truth box of their person, at the operating threshold; keypoints of persons with no
  matched detection count as misses.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np

from models.ops import box_iou
from models.simnet.infer import SimPerception
from models.simnet.net import CLASS_NAMES, PERSON
from stream.sim.datasets import (
    COCO_CATEGORY_IDS,
    coco_annotations,
    coco_categories,
    heldout_scenes,
    render_annotated,
)

ROOT = Path(__file__).resolve().parents[1]

OPERATING_THRESHOLD = 0.4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--weights", default="auto", help="auto | path to a simnet state_dict")
    p.add_argument("--quick", action="store_true", help="2 scenes x 30 frames")
    p.add_argument("--scenes", type=int, default=4)
    p.add_argument("--frames", type=int, default=60, help="frames per scene")
    p.add_argument("--offset", type=int, default=0, help="first held-out seed offset")
    return p.parse_args(argv)


def match(gt: np.ndarray, pred: np.ndarray, thr: float = 0.5) -> np.ndarray:
    """Greedy one-to-one matching at IoU >= ``thr``; ``pred`` sorted by score.

    Returns ``(n_gt,)``: the matched prediction's index, or -1.
    """
    out = np.full(len(gt), -1, np.int64)
    iou = box_iou(pred, gt)
    for p in range(len(pred)):
        if iou.shape[1] == 0:
            break
        row = np.where(out >= 0, -1.0, iou[p])
        g = int(row.argmax())
        if row[g] >= thr:
            out[g] = p
    return out


def evaluate(
    weights: str = "auto",
    *,
    n_scenes: int = 4,
    n_frames: int = 60,
    offset: int = 0,
    batch: int = 8,
) -> dict[str, float]:
    """Run the model over held-out scenes and return the figures (see the module docstring)."""
    low = SimPerception(weights=weights, score_threshold=0.05, max_detections=50)
    gt_images, gt_anns, dets = [], [], []
    n_gt = n_tp = n_pred = 0
    kp_total = kp_hit = 0
    ious = []
    t_infer = 0.0
    n_img = 0
    for scene in heldout_scenes(n_scenes, n_frames=n_frames, offset=offset):
        for start in range(0, scene.n_frames, batch):
            frames = [
                render_annotated(scene, i) for i in range(start, min(start + batch, scene.n_frames))
            ]
            t0 = time.perf_counter()
            outs = low([f.image for f in frames])
            t_infer += time.perf_counter() - t0
            for frame, (det, poses, masks) in zip(frames, outs):
                n_img += 1
                image_id = n_img
                h, w = frame.image.shape[:2]
                gt_images.append({"id": image_id, "width": w, "height": h})
                gt_anns += coco_annotations(frame, image_id, len(gt_anns) + 1)
                for box, score, cls in zip(det.xyxy, det.score, det.class_id):
                    x1, y1, x2, y2 = (float(v) for v in box)
                    dets.append(
                        {
                            "image_id": image_id,
                            "category_id": int(cls) + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(score),
                        }
                    )
                # Operating point: persons above the threshold, poses aligned to person rows.
                person_rows = det.class_id == PERSON
                keep = det.score[person_rows] >= OPERATING_THRESHOLD
                pboxes = det.xyxy[person_rows][keep]
                pkps = poses.keypoints[keep]
                gmask = frame.labels == PERSON
                gboxes, gkps = frame.boxes[gmask], frame.keypoints[gmask]
                m = match(gboxes, pboxes)
                n_gt += len(gboxes)
                n_tp += int((m >= 0).sum())
                n_pred += len(pboxes)
                for g in range(len(gboxes)):
                    vis = gkps[g, :, 2] == 2
                    kp_total += int(vis.sum())
                    if m[g] < 0:
                        continue
                    bw, bh = gboxes[g, 2] - gboxes[g, 0], gboxes[g, 3] - gboxes[g, 1]
                    d = np.hypot(*(pkps[m[g], :, :2] - gkps[g, :, :2]).T)
                    kp_hit += int(((d <= 0.1 * max(bw, bh)) & vis).sum())
                pm, gm = masks.semantic == 1, frame.person_mask
                union = (pm | gm).sum()
                ious.append(float((pm & gm).sum() / union) if union else 1.0)
    ap50, map50 = _coco_ap50(gt_images, gt_anns, dets)
    return {
        "person_ap50": round(ap50, 4),
        "map50": round(map50, 4),
        "person_recall50": round(n_tp / max(n_gt, 1), 4),
        "person_precision50": round(n_tp / max(n_pred, 1), 4),
        "mask_iou": round(float(np.mean(ious)) if ious else 0.0, 4),
        "pck10": round(kp_hit / max(kp_total, 1), 4),
        "n_images": n_img,
        "n_persons": n_gt,
        "ms_per_frame": round(1000 * t_infer / max(n_img, 1), 1),
    }


def _coco_ap50(images: list, anns: list, dets: list) -> tuple[float, float]:
    """(person AP50, mean AP50 over classes) with pycocotools."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": coco_categories()}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not dets:
            return 0.0, 0.0
        dt = gt.loadRes(dets)
        per_class = []
        for name in CLASS_NAMES:
            ev = COCOeval(gt, dt, "bbox")
            ev.params.catIds = [COCO_CATEGORY_IDS[name]]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            has_gt = any(a["category_id"] == COCO_CATEGORY_IDS[name] for a in anns)
            per_class.append(float(ev.stats[1]) if has_gt else float("nan"))
    valid = [v for v in per_class if v == v and v >= 0]
    return per_class[0], float(np.mean(valid)) if valid else 0.0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenes, frames = (2, 30) if args.quick else (args.scenes, args.frames)
    figures = evaluate(args.weights, n_scenes=scenes, n_frames=frames, offset=args.offset)
    targets = {"person_ap50": 0.9, "mask_iou": 0.8, "pck10": 0.8}
    print(f"{'metric':<20}{'value':>10}{'target':>10}")
    for k, v in figures.items():
        tgt = f">= {targets[k]}" if k in targets else ""
        print(f"{k:<20}{v:>10}{tgt:>10}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
