"""Evaluate the action forecaster and the tracker on held-out synthetic data.

Example::

    .venv/bin/python scripts/eval_action.py            # 3000 sequences, 12 crossing scenes
    .venv/bin/python scripts/eval_action.py --quick    # 600 sequences, 2 crossing scenes

Reports, for the forecaster: accuracy per horizon and per true class on sequences from
``stream.sim.sample.motion_dataset`` drawn with a seed the training never used, passed through the
same resampling/normalisation as the live pipeline; plus the accuracy on the *predictable*
windows (no change of action before the horizon, or only a forced one: sit_down -> sit,
fall -> lie) and a cue-blind baseline on the whole set (an oracle that knows the current action
and how long it has lasted, and the synthetic scripts' transition law, but not the anticipation
cues the figures show before a change; Monte Carlo). Writes a confusion
matrix PNG per horizon (OpenCV). For the tracker: IDF1 (models.people.tracking.idf1, IoU 0.5) on
rendered synthetic scenes where people walk through each other, with detections made from the
ground-truth boxes plus noise and occlusion-dependent scores/misses.

Prints tables, then ONE JSON line:
``{"accuracy": {"0.5": .., "1.0": ..}, "per_class": {"0.5": {...}, ...}, "idf1": ..}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from models.people.action import ACTION_VOCAB, ActionForecaster
from models.people.pose_buffer import normalise_window, resample_track
from models.people.tracking import ByteTracker, idf1
from models.results import Detections
from stream.sim.render import render_frame
from stream.sim.sample import motion_dataset
from stream.sim.world import (
    ACTION_DURATION_S,
    NEXT_ACTION,
    SHIRTS,
    FigureScript,
    Scene,
    Segment,
    figure_layout,
    random_script,
    weighted_choice,
)

#: Transitions that always follow their action (the synthetic scripts' Markov chain).
FORCED_NEXT = {"sit_down": "sit", "fall": "lie"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--weights", default="auto", help='"auto" (shipped) or a .pt path')
    p.add_argument("--seed", type=int, default=20251127, help="held-out data seed")
    p.add_argument("--n", type=int, default=3000, help="held-out sequences")
    p.add_argument("--scenes", type=int, default=12, help="crossing scenes for IDF1")
    p.add_argument("--quick", action="store_true", help="600 sequences, 2 scenes, no oracle")
    p.add_argument("--out-dir", type=Path, default=Path("eval_out"), help="PNG output folder")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.scenes = min(args.n, 600), min(args.scenes, 2)
    return args


# ---------------------------------------------------------------------------------------------
# Forecaster
# ---------------------------------------------------------------------------------------------


def held_out(fc: ActionForecaster, seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows ``(n, T, 17, 3)``, labels now ``(n,)`` and at each horizon ``(n, H)``."""
    rng = np.random.default_rng(seed)
    x, y_now, y_h = motion_dataset(
        rng, n, rate_hz=fc.rate_hz, window_s=fc.window_s, horizons_s=fc.horizons_s
    )
    t = np.arange(x.shape[1]) / fc.rate_hz
    windows = np.stack([normalise_window(resample_track(t, r, t)) for r in x])
    return windows, np.asarray(y_now), np.asarray(y_h)


def predictable(y_now: np.ndarray, y_h: np.ndarray) -> np.ndarray:
    """``(n,)`` True where the action at the horizon follows from the current one."""
    forced = np.array([ACTION_VOCAB.index(FORCED_NEXT.get(a, a)) for a in ACTION_VOCAB])
    return (y_h == y_now) | (y_h == forced[y_now])


def oracle_accuracy(
    seed: int,
    n: int,
    horizons: tuple[float, ...],
    rate_hz: float,
    window_s: float,
    draws: int = 200,
) -> dict[str, float]:
    """Accuracy of the best possible guess given the current segment (action, age) and the
    scripts' transition law (Monte Carlo over futures). It ignores the anticipation cues the
    poses show before a change (stream.sim.motion), so a pose model can beat it: the ceiling for
    a forecaster blind to those cues."""
    rng = np.random.default_rng(seed + 1)
    span = (round(window_s * rate_hz) - 1) / rate_hz
    duration = span + max(horizons) + 8.0
    best = {h: [] for h in horizons}
    for _ in range(n):
        sc = random_script(rng, duration_s=duration, width=640, height=360, figure_id=1)
        t = float(rng.uniform(span, duration - max(horizons)))
        seg = next(s for s in sc.segments if t < s.end_s)
        for h in horizons:
            counts: dict[str, int] = {}
            for _ in range(draws):
                lo, hi = ACTION_DURATION_S[seg.action]
                age = t - seg.start_s
                left = float(rng.uniform(max(lo, age), hi)) - age if age < hi else 0.0
                action = seg.action
                while left <= h:
                    action = weighted_choice(rng, NEXT_ACTION[action])
                    left += float(rng.uniform(*ACTION_DURATION_S[action]))
                counts[action] = counts.get(action, 0) + 1
            best[h].append(max(counts.values()) / draws)
    return {str(float(h)): round(float(np.mean(v)), 4) for h, v in best.items()}


def confusion_png(conf: np.ndarray, labels: tuple[str, ...], title: str, path: Path) -> None:
    """Row-normalised confusion matrix (rows = truth) drawn with OpenCV."""
    cell, left, top = 64, 110, 160
    n = len(labels)
    img = np.full((top + n * cell + 20, left + n * cell + 20, 3), 255, np.uint8)
    rows = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, title, (10, 24), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for i in range(n):
        for j in range(n):
            v = float(rows[i, j])
            shade = int(255 - 200 * v)
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(img, (x0, y0), (x0 + cell, y0 + cell), (255, shade, shade), -1)
            cv2.rectangle(img, (x0, y0), (x0 + cell, y0 + cell), (180, 180, 180), 1)
            colour = (255, 255, 255) if v > 0.6 else (0, 0, 0)
            cv2.putText(img, f"{v:.2f}", (x0 + 12, y0 + 38), font, 0.45, colour, 1, cv2.LINE_AA)
        cv2.putText(img, labels[i], (8, top + i * cell + 38), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        label_img = np.full((cell, 100, 3), 255, np.uint8)
        cv2.putText(label_img, labels[i], (2, 40), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        rot = cv2.rotate(label_img, cv2.ROTATE_90_COUNTERCLOCKWISE)  # (100, cell)
        img[top - 100 - 4 : top - 4, left + i * cell : left + (i + 1) * cell] = rot
    cv2.putText(
        img, "true (rows) / predicted (columns)", (10, 48), font, 0.45, (80, 80, 80), 1, cv2.LINE_AA
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


# ---------------------------------------------------------------------------------------------
# Tracker
# ---------------------------------------------------------------------------------------------


def crossing_scene(seed: int, duration_s: float = 6.0) -> Scene:
    """Four people: two walk right, two walk left, at different depths, so every right-walker
    passes every left-walker and the farther one is hidden for a moment."""
    rng = np.random.default_rng(seed)
    figures = []
    for i, (depth, x0, direction) in enumerate(
        [(0.3, 40.0, 1), (0.5, 600.0, -1), (0.7, 180.0, 1), (0.4, 460.0, -1)]
    ):
        ground_y, h = figure_layout(360, depth + float(rng.uniform(-0.05, 0.05)))
        speed = direction * float(rng.uniform(0.5, 0.65)) * h
        figures.append(
            FigureScript(
                figure_id=i + 1,
                segments=(Segment("walk", 0.0, duration_s),),
                x0=x0,
                ground_y=ground_y,
                height_px=h,
                speed_px_s=speed,
                color=SHIRTS[i % len(SHIRTS)],
                walk_bounds=None,
            )
        )
    return Scene(seed, 640, 360, 15.0, duration_s, tuple(figures), ())


def simulated_detections(gt_objects: list[dict], rng: np.random.Generator) -> Detections:
    """Detector stand-in: GT person boxes with jitter (2 % of the height); the score falls with
    the share of hidden keypoints (ByteTrack's low-score regime); mostly hidden people are
    usually missed."""
    boxes, scores = [], []
    for obj in gt_objects:
        if obj["class"] != "person":
            continue
        vis = float(np.mean([k[2] for k in obj["keypoints"]]))
        if vis < 0.25 and rng.random() < 0.7:
            continue
        b = np.asarray(obj["box"], np.float64)
        b = b + rng.normal(0, 0.02, 4) * (b[3] - b[1])
        b[2:] = np.maximum(b[2:], b[:2] + 1)
        boxes.append(b)
        scores.append(float(np.clip(0.3 + 0.65 * vis + rng.normal(0, 0.05), 0.05, 0.99)))
    if not boxes:
        return Detections.empty()
    return Detections(np.asarray(boxes), np.asarray(scores), np.zeros(len(boxes), np.int64))


def tracking_idf1(seed: int, n_scenes: int) -> tuple[float, list[float]]:
    """IDF1 over all crossing scenes together, and per scene."""
    all_gt_ids, all_gt_boxes, all_pred_ids, all_pred_boxes = [], [], [], []
    per_scene = []
    for s in range(n_scenes):
        scene = crossing_scene(seed + s)
        rng = np.random.default_rng(seed + 100 + s)
        tracker = ByteTracker()
        g_ids, g_boxes, p_ids, p_boxes = [], [], [], []
        for i in range(scene.n_frames):
            _, gt = render_frame(scene, i)
            people = [o for o in gt["objects"] if o["class"] == "person"]
            g_ids.append([1000 * s + o["id"] for o in people])
            g_boxes.append(np.asarray([o["box"] for o in people]).reshape(-1, 4))
            det = tracker.update(simulated_detections(people, rng), i).detections
            p_ids.append([1000 * s + t if t >= 0 else -1 for t in det.track_id])
            p_boxes.append(det.xyxy)
        per_scene.append(idf1(g_ids, g_boxes, p_ids, p_boxes))
        all_gt_ids += g_ids
        all_gt_boxes += g_boxes
        all_pred_ids += p_ids
        all_pred_boxes += p_boxes
    return idf1(all_gt_ids, all_gt_boxes, all_pred_ids, all_pred_boxes), per_scene


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    fc = ActionForecaster(weights=args.weights, horizons_s=None)
    print(
        f"weights: {fc.weights_source}; horizons {list(fc.horizons_s)} s; "
        f"held-out seed {args.seed}, {args.n} sequences"
    )
    windows, y_now, y_h = held_out(fc, args.seed, args.n)
    pred = fc.predict_proba(windows).argmax(-1)  # (n, H)
    accuracy: dict[str, float] = {}
    per_class: dict[str, dict[str, float]] = {}
    pred_acc: dict[str, float] = {}
    header = "horizon  " + " ".join(f"{a[:8]:>8}" for a in ACTION_VOCAB) + "      all  predictable"
    print(header)
    for k, h in enumerate(fc.horizons_s):
        key = str(float(h))
        correct = pred[:, k] == y_h[:, k]
        accuracy[key] = round(float(correct.mean()), 4)
        per_class[key] = {
            a: round(float(correct[y_h[:, k] == c].mean()), 4)
            for c, a in enumerate(ACTION_VOCAB)
            if (y_h[:, k] == c).any()
        }
        mask = predictable(y_now, y_h[:, k])
        pred_acc[key] = round(float(correct[mask].mean()), 4)
        cells = " ".join(f"{per_class[key].get(a, float('nan')):8.3f}" for a in ACTION_VOCAB)
        print(
            f"{h:5.2f} s  {cells} {accuracy[key]:8.3f} {pred_acc[key]:8.3f} "
            f"({mask.mean():.0%} of windows)"
        )
        conf = np.zeros((len(ACTION_VOCAB),) * 2, np.int64)
        np.add.at(conf, (y_h[:, k], pred[:, k]), 1)
        png = args.out_dir / f"confusion_{key}s.png"
        confusion_png(
            conf, ACTION_VOCAB, f"action forecast, horizon {h:g} s, acc {accuracy[key]:.3f}", png
        )
        print(f"         confusion matrix -> {png}")
    oracle = None
    future = tuple(h for h in fc.horizons_s if h > 0)
    if not args.quick and future:
        oracle = oracle_accuracy(args.seed, 400, future, fc.rate_hz, fc.window_s)
        print(f"cue-blind oracle (knows current action + its age, not the cues): {oracle}")
    score, per_scene = tracking_idf1(args.seed, args.scenes)
    print(
        f"tracker IDF1 on {args.scenes} crossing scenes: {score:.4f} "
        f"(per scene {[round(s, 3) for s in per_scene]})"
    )
    print(f"({time.monotonic() - t0:.0f} s)")
    out = {
        "accuracy": {k: v for k, v in accuracy.items() if float(k) > 0},
        "per_class": {k: v for k, v in per_class.items() if float(k) > 0},
        "idf1": round(score, 4),
        "accuracy_now": accuracy.get("0.0"),
        "accuracy_predictable": pred_acc,
        "oracle_ceiling": oracle,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
