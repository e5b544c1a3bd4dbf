"""Multi-object tracking: a ByteTrack-style tracker and the IDF1 identity metric.

:class:`ByteTracker` follows Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every
Detection Box" (ECCV 2022): a constant-velocity Kalman filter over ``(cx, cy, w, h)`` (pixels)
predicts each track; detections are associated in stages by IoU with Hungarian assignment:
(1) high-score detections to confirmed tracks, (2) low-score detections to the confirmed tracks
still unmatched, (3) leftover high-score detections to tentative tracks, and (4) a loose
fallback (IoU >= ``fallback_iou``) between confirmed tracks matched in the previous frame and the
high-score detections nobody took, which keeps identity through fast shape changes (a fall turns
a tall box into a wide one within a few frames), and (5) a re-find by ground position: a track
lost for at most ``refind_frames`` takes a leftover detection (any score above ``low_thresh``)
of a clearly different shape whose bottom centre, where a person touches the ground, is within
``refind_radius`` of its height from where the track last stood; a person who fell is found
lying where they stood, however the box changed and even with the low scores a lying figure
gets. A track is confirmed (gets reported and emits ``started``) after ``min_hits`` consecutive
matches; a confirmed track that goes unmatched is kept *lost* for ``max_age`` frames (so it can
be re-found after an occlusion) and then ended. Ended tracks are dropped, so memory is bounded
by the number of live tracks.

:func:`idf1` is the identity F1 score of Ristani et al., "Performance Measures and a Data Set for
Multi-Target, Multi-Camera Tracking" (ECCV 2016 workshops), computed as py-motmetrics does: a
global min-cost bipartite matching between ground-truth and predicted identities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from models.ops import box_iou, match_max
from models.results import Detections

__all__ = ["ByteTracker", "TrackUpdate", "KalmanBoxFilter", "idf1"]


@dataclass
class TrackUpdate:
    """What one :meth:`ByteTracker.update` call produced.

    Attributes:
        detections: the input detections with ``track_id`` filled (-1 = unmatched or a track
            that is not confirmed yet).
        started: ids of tracks confirmed in this frame (each id appears once in a stream).
        ended: ids of tracks removed in this frame (lost for more than ``max_age`` frames).
    """

    detections: Detections
    started: list[int] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Kalman filter
# --------------------------------------------------------------------------------------------


def xyxy_to_xywh(box: np.ndarray) -> np.ndarray:
    """``(4,)`` xyxy -> ``(4,)`` centre x, centre y, width, height (pixels)."""
    w = max(float(box[2] - box[0]), 1e-3)
    h = max(float(box[3] - box[1]), 1e-3)
    return np.array([box[0] + w / 2, box[1] + h / 2, w, h], np.float64)


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """``(4,)`` centre x, centre y, width, height -> ``(4,)`` xyxy (pixels)."""
    cx, cy, w, h = (float(v) for v in xywh[:4])
    w, h = max(w, 1e-3), max(h, 1e-3)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float64)


class KalmanBoxFilter:
    """Constant-velocity Kalman filter on ``(cx, cy, w, h)`` in pixels (BoT-SORT's form).

    State ``(8,)`` = box and its per-frame velocity. Width and height each have their own
    velocity (unlike SORT's fixed aspect ratio) because people change shape fast when they fall,
    sit or lie down. Noise scales with the box size, so near and far people behave alike.
    """

    std_position = 1.0 / 20
    std_velocity = 1.0 / 160

    def __init__(self) -> None:
        self.motion = np.eye(8)
        self.motion[:4, 4:] = np.eye(4)  # x_{t+1} = x_t + v_t (one frame)
        self.observe = np.eye(4, 8)

    def _scale(self, xywh: np.ndarray) -> np.ndarray:
        w, h = max(float(xywh[2]), 1.0), max(float(xywh[3]), 1.0)
        return np.array([w, h, w, h])

    def initiate(self, xywh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New state ``(8,)`` and covariance ``(8, 8)`` from a first measurement ``(4,)``."""
        mean = np.r_[xywh, np.zeros(4)]
        s = self._scale(xywh)
        std = np.r_[2 * self.std_position * s, 10 * self.std_velocity * s]
        return mean, np.diag(np.square(std))

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance one frame."""
        s = self._scale(mean)
        std = np.r_[self.std_position * s, self.std_velocity * s]
        mean = self.motion @ mean
        mean[2:4] = np.maximum(mean[2:4], 1.0)  # a box never shrinks below a pixel
        cov = self.motion @ cov @ self.motion.T + np.diag(np.square(std))
        return mean, cov

    def gating_distance(self, mean: np.ndarray, cov: np.ndarray, xywh: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances ``(m,)`` of measurements ``(m, 4)`` from the state."""
        std = self.std_position * self._scale(mean)
        proj_cov = self.observe @ cov @ self.observe.T + np.diag(np.square(std))
        d = np.asarray(xywh, np.float64).reshape(-1, 4) - mean[:4]
        return np.einsum("ij,ij->i", d, np.linalg.solve(proj_cov, d.T).T)

    def update(
        self, mean: np.ndarray, cov: np.ndarray, xywh: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Correct with a measurement ``(4,)``."""
        std = self.std_position * self._scale(mean)
        proj_cov = self.observe @ cov @ self.observe.T + np.diag(np.square(std))
        gain = np.linalg.solve(proj_cov, (cov @ self.observe.T).T).T
        mean = mean + gain @ (xywh - self.observe @ mean)
        cov = cov - gain @ proj_cov @ gain.T
        return mean, cov


# --------------------------------------------------------------------------------------------
# Tracker
# --------------------------------------------------------------------------------------------

_TENTATIVE, _TRACKED, _LOST = 0, 1, 2

#: Chi-square 0.95 quantile for 4 degrees of freedom (DeepSORT's gate on the association).
GATE_CHI2 = 9.4877


@dataclass
class _Track:
    track_id: int
    mean: np.ndarray
    cov: np.ndarray
    score: float
    hits: int = 1
    state: int = _TENTATIVE
    last_frame: int = 0
    confirmed: bool = False
    last_box: np.ndarray | None = None  # the last matched detection, xyxy

    def box(self) -> np.ndarray:
        return xywh_to_xyxy(self.mean)


class ByteTracker:
    """ByteTrack-style multi-object tracker (one per stream, one class of objects).

    Args:
        high_thresh: detections with ``score >= high_thresh`` go to the first association
            stage and may start new tracks.
        low_thresh: detections with ``low_thresh <= score < high_thresh`` are only used to keep
            existing tracks alive (second stage); lower scores are ignored.
        match_iou: minimum IoU between a predicted track box and a detection for a match.
        max_age: frames a confirmed track survives unmatched ("lost") before it ends.
        min_hits: consecutive matches (including the first detection) to confirm a track.
        fallback_iou: minimum IoU of the loose stage (confirmed tracks matched in the
            previous frame vs high-score detections left unmatched).
        refind_frames: lost tracks up to this many frames old may be re-found by ground
            position (0 turns the stage off).
        refind_radius: that distance, in heights of the track's last box.
        refind_shape: ... and only a box whose aspect ratio differs from the track's last by at
            least this factor (a posture change, not someone else walking by).

    Frame indices passed to :meth:`update` should increase by 1 per frame; a gap of ``g`` frames
    predicts the Kalman filter ``g`` steps and ages lost tracks accordingly.
    """

    def __init__(
        self,
        *,
        high_thresh: float = 0.5,
        low_thresh: float = 0.1,
        match_iou: float = 0.3,
        max_age: int = 30,
        min_hits: int = 2,
        fallback_iou: float = 0.05,
        refind_frames: int = 15,
        refind_radius: float = 0.5,
        refind_shape: float = 1.5,
    ) -> None:
        if not 0 <= low_thresh <= high_thresh <= 1:
            raise ValueError(
                f"need 0 <= low_thresh <= high_thresh <= 1, got {low_thresh}, {high_thresh}"
            )
        if min_hits < 1 or max_age < 0:
            raise ValueError(f"need min_hits >= 1 and max_age >= 0, got {min_hits}, {max_age}")
        self.high_thresh = high_thresh
        self.low_thresh = low_thresh
        self.match_iou = match_iou
        self.max_age = max_age
        self.min_hits = min_hits
        self.fallback_iou = fallback_iou
        self.refind_frames = refind_frames
        self.refind_radius = refind_radius
        self.refind_shape = refind_shape
        self._kf = KalmanBoxFilter()
        self.reset()

    def reset(self) -> None:
        """Forget every track (stream restart); ids start again at 1. Emits nothing."""
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_frame: int | None = None

    @property
    def active_ids(self) -> list[int]:
        """Ids of confirmed tracks not yet ended (tracked or lost), in creation order."""
        return [t.track_id for t in self._tracks if t.confirmed]

    def update(self, det: Detections, frame_idx: int) -> TrackUpdate:
        """Associate one frame's detections with the tracks.

        Args:
            det: detections of the objects to track (caller filters by class).
            frame_idx: the frame's index in the stream.

        Returns:
            :class:`TrackUpdate` with ``det`` copied and its ``track_id`` filled.
        """
        steps = 1 if self._last_frame is None else max(1, frame_idx - self._last_frame)
        self._last_frame = frame_idx
        for t in self._tracks:
            for _ in range(steps):
                t.mean, t.cov = self._kf.predict(t.mean, t.cov)

        n = len(det)
        out_ids = np.full(n, -1, np.int64)
        score = det.score.astype(np.float64)
        high = np.flatnonzero(score >= self.high_thresh)
        low = np.flatnonzero((score >= self.low_thresh) & (score < self.high_thresh))

        # Stage 1: high-score detections vs confirmed tracks (tracked and lost).
        confirmed = [i for i, t in enumerate(self._tracks) if t.confirmed]
        tentative = [i for i, t in enumerate(self._tracks) if not t.confirmed]
        matches1, un_tracks, un_high = self._associate(confirmed, high, det.xyxy, self.match_iou)
        # Stage 2: low-score detections vs confirmed tracks still unmatched (ByteTrack's key idea:
        # occluded people give low scores; they keep the track alive but never start one).
        matches2, _, _ = self._associate(un_tracks, low, det.xyxy, max(self.match_iou, 0.5))
        # Stage 3: tentative tracks vs the high-score detections left over.
        un_high_arr = np.asarray(un_high, np.int64)
        matches3, un_tent, un_high = self._associate(
            tentative, un_high_arr, det.xyxy, self.match_iou
        )
        # Stage 4: loose fallback for confirmed tracks seen in the previous frame.
        taken = {t for t, _ in matches2}
        recent = [
            i
            for i in un_tracks
            if i not in taken and self._tracks[i].last_frame == frame_idx - steps
        ]
        matches4, _, un_high = self._associate(
            recent, np.asarray(un_high, np.int64), det.xyxy, self.fallback_iou, gate=False
        )
        # Stage 5: lost tracks re-found by where they stood, with any leftover detection.
        used = {d for _, d in [*matches1, *matches2, *matches3, *matches4]}
        left = [int(d) for d in np.r_[un_high, low] if int(d) not in used]
        done = {t for t, _ in [*matches1, *matches2, *matches4]}
        lost = [
            i
            for i, t in enumerate(self._tracks)
            if t.confirmed and i not in done and 0 < frame_idx - t.last_frame <= self.refind_frames
        ]
        matches5 = self._refind(lost, left, det.xyxy)
        refound = {ti for ti, _ in matches5}
        refound_dets = {di for _, di in matches5}
        un_high = [d for d in un_high if d not in refound_dets]
        matched_tracks: set[int] = set()
        started: list[int] = []
        for ti, di in [*matches1, *matches2, *matches3, *matches4, *matches5]:
            t = self._tracks[ti]
            if ti in refound:  # its shape changed: start the filter over at the detection
                t.mean, t.cov = self._kf.initiate(xyxy_to_xywh(det.xyxy[di]))
            else:
                t.mean, t.cov = self._kf.update(t.mean, t.cov, xyxy_to_xywh(det.xyxy[di]))
            t.last_box = det.xyxy[di].astype(np.float64)
            t.score = float(score[di])
            t.hits = t.hits + 1 if t.last_frame == frame_idx - steps else 1
            t.last_frame = frame_idx
            t.state = _TRACKED if t.confirmed or t.hits >= self.min_hits else _TENTATIVE
            if not t.confirmed and t.hits >= self.min_hits:
                t.confirmed = True
                started.append(t.track_id)
            if t.confirmed:
                out_ids[di] = t.track_id
            matched_tracks.add(ti)

        ended: list[int] = []
        keep: list[_Track] = []
        for i, t in enumerate(self._tracks):
            if i in matched_tracks:
                keep.append(t)
            elif not t.confirmed:
                continue  # unconfirmed and missed: a false start, dropped silently
            elif frame_idx - t.last_frame > self.max_age:
                ended.append(t.track_id)
            else:
                t.state = _LOST
                keep.append(t)
        # Birth: unmatched high-score detections start tentative tracks.
        for di in un_high:
            mean, cov = self._kf.initiate(xyxy_to_xywh(det.xyxy[di]))
            t = _Track(self._next_id, mean, cov, float(score[di]), last_frame=frame_idx)
            t.last_box = det.xyxy[di].astype(np.float64)
            self._next_id += 1
            if self.min_hits <= 1:
                t.confirmed, t.state = True, _TRACKED
                started.append(t.track_id)
                out_ids[di] = t.track_id
            keep.append(t)
        self._tracks = keep
        out = Detections(det.xyxy.copy(), det.score.copy(), det.class_id.copy(), out_ids)
        return TrackUpdate(out, started, ended)

    def finish(self) -> list[int]:
        """End every confirmed track (end of stream); returns their ids and forgets all tracks."""
        ids = self.active_ids
        self._tracks = []
        return ids

    def track_box(self, track_id: int) -> np.ndarray | None:
        """Current (predicted or corrected) ``(4,)`` xyxy box of a live track, or None."""
        for t in self._tracks:
            if t.track_id == track_id:
                return t.box()
        return None

    def _refind(
        self, track_idx: list[int], det_idx: list[int], xyxy: np.ndarray
    ) -> list[tuple[int, int]]:
        """Stage 5: lost tracks vs detections by ground-contact distance (bottom centres, in
        heights of the track's last box), Hungarian on that distance within the radius."""
        if not track_idx or not det_idx or self.refind_frames <= 0:
            return []
        cost = np.full((len(track_idx), len(det_idx)), np.inf)
        for r, ti in enumerate(track_idx):
            last = self._tracks[ti].last_box
            if last is None:
                continue
            height = max(float(last[3] - last[1]), 1.0)
            aspect = max(float(last[2] - last[0]), 1.0) / height
            foot = np.array([(last[0] + last[2]) / 2, last[3]])
            for c, di in enumerate(det_idx):
                b = xyxy[di]
                dist = np.hypot((b[0] + b[2]) / 2 - foot[0], b[3] - foot[1]) / height
                ratio = max(float(b[2] - b[0]), 1.0) / max(float(b[3] - b[1]), 1.0) / aspect
                # Only a change of posture (a fall, lying down, getting up): people who merely
                # cross keep their shape, and there a nearby box is as likely someone else's.
                if dist <= self.refind_radius and max(ratio, 1 / ratio) >= self.refind_shape:
                    cost[r, c] = dist
        if not np.isfinite(cost).any():
            return []
        rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e6))
        return [(track_idx[r], det_idx[c]) for r, c in zip(rows, cols) if np.isfinite(cost[r, c])]

    def _associate(
        self,
        track_idx: list[int],
        det_idx: np.ndarray,
        xyxy: np.ndarray,
        min_iou: float,
        gate: bool = True,
    ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        """Hungarian IoU matching; returns (track, det) pairs, unmatched tracks, unmatched dets.

        With ``gate``, pairs whose squared Mahalanobis distance under the track's Kalman
        covariance exceeds :data:`GATE_CHI2` are never matched (DeepSORT's gate): two people
        crossing at different depths overlap a lot but differ in height and foot position.
        """
        det_idx = [int(d) for d in det_idx]
        if not track_idx or not det_idx:
            return [], list(track_idx), det_idx
        boxes = np.stack([self._tracks[i].box() for i in track_idx])
        iou = box_iou(boxes, xyxy[det_idx])
        if gate:
            meas = np.stack([xyxy_to_xywh(xyxy[d]) for d in det_idx])
            for r, ti in enumerate(track_idx):
                t = self._tracks[ti]
                iou[r, self._kf.gating_distance(t.mean, t.cov, meas) > GATE_CHI2] = 0.0
        matches, mt, md = [], set(), set()
        for r, c in match_max(iou, min_iou):
            matches.append((track_idx[r], det_idx[c]))
            mt.add(r)
            md.add(c)
        un_t = [track_idx[r] for r in range(len(track_idx)) if r not in mt]
        un_d = [det_idx[c] for c in range(len(det_idx)) if c not in md]
        return matches, un_t, un_d


# --------------------------------------------------------------------------------------------
# Identity metric
# --------------------------------------------------------------------------------------------


def idf1(
    gt_ids_per_frame: Sequence[Sequence[int]],
    gt_boxes: Sequence[np.ndarray],
    pred_ids: Sequence[Sequence[int]],
    pred_boxes: Sequence[np.ndarray],
    iou: float = 0.5,
) -> float:
    """Identity F1 score (IDF1) over a sequence, as Ristani et al. 2016 / py-motmetrics define it.

    Every ground-truth identity is matched to at most one predicted identity by a global
    min-cost bipartite matching. For a pair (g, p) the number of *identity true positives* is the
    number of frames where both are present and their boxes overlap with IoU >= ``iou``;
    unmatched identities contribute all their frames as false negatives / false positives. Then
    ``IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN) = 2 IDTP / (#gt boxes + #pred boxes)``.

    Args:
        gt_ids_per_frame: per frame, the ground-truth identities present (length ``n_gt[t]``).
        gt_boxes: per frame, ``(n_gt[t], 4)`` xyxy boxes in pixels, aligned with the ids.
        pred_ids: per frame, the predicted identities (use only confirmed track ids; -1 entries
            are ignored).
        pred_boxes: per frame, ``(n_pred[t], 4)`` xyxy boxes aligned with ``pred_ids``.
        iou: minimum IoU for a frame to count as a match of a (gt, pred) pair.

    Returns:
        IDF1 in [0, 1]; 1.0 when there is nothing at all in either sequence.
    """
    if not (len(gt_ids_per_frame) == len(gt_boxes) == len(pred_ids) == len(pred_boxes)):
        raise ValueError(
            "gt_ids_per_frame, gt_boxes, pred_ids and pred_boxes need one entry per frame"
        )
    gt_index: dict[int, int] = {}
    pr_index: dict[int, int] = {}
    n_gt = n_pred = 0
    overlap: dict[tuple[int, int], int] = {}
    for g_ids, g_box, p_ids, p_box in zip(
        gt_ids_per_frame, gt_boxes, pred_ids, pred_boxes, strict=True
    ):
        g_ids = [int(i) for i in g_ids]
        p_keep = [k for k, i in enumerate(p_ids) if int(i) >= 0]
        p_ids_k = [int(p_ids[k]) for k in p_keep]
        g_box = np.asarray(g_box, np.float64).reshape(-1, 4)
        p_box = np.asarray(p_box, np.float64).reshape(-1, 4)[p_keep]
        if len(g_box) != len(g_ids):
            raise ValueError(f"gt ids and boxes differ in length: {len(g_ids)} vs {len(g_box)}")
        n_gt += len(g_ids)
        n_pred += len(p_ids_k)
        for i in g_ids:
            gt_index.setdefault(i, len(gt_index))
        for i in p_ids_k:
            pr_index.setdefault(i, len(pr_index))
        ious = box_iou(g_box, p_box)
        for a, b in zip(*np.nonzero(ious >= iou), strict=True):
            key = (gt_index[g_ids[a]], pr_index[p_ids_k[b]])
            overlap[key] = overlap.get(key, 0) + 1
    if n_gt + n_pred == 0:
        return 1.0
    if not gt_index or not pr_index:
        return 0.0
    # Maximising summed overlap frames == py-motmetrics' min-cost (FP + FN) matching, since each
    # identity's own frame count is a constant of the problem.
    gain = np.zeros((len(gt_index), len(pr_index)))
    for (g, p), c in overlap.items():
        gain[g, p] = c
    rows, cols = linear_sum_assignment(-gain)
    idtp = float(gain[rows, cols].sum())
    return 2 * idtp / (n_gt + n_pred)
