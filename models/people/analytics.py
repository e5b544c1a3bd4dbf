"""People analytics for one stream: tracking, pose history, action forecasts and their events.

:class:`PeopleAnalytics` is what the pipeline's analytics stage calls once per frame. It

1. tracks the person detections with a :class:`models.people.tracking.ByteTracker` (fills
   ``result.detections.track_id``; -1 for other classes and unconfirmed people);
2. gives each pose the track of the person box it belongs to (fills ``result.poses.track_id``);
3. feeds each tracked pose into that track's :class:`models.people.pose_buffer.PoseBuffer` at
   ``result.pts`` seconds;
4. runs the :class:`models.people.action.ActionForecaster` on every track seen in this frame whose
   buffer covers a full window (fills ``result.forecasts``);
5. returns the events of the frame as ``(type, fields)`` pairs, in this order: ``track.end``,
   ``track.start``, ``action.forecast`` (tracks in increasing id, horizons in forecaster order).

Everything depends only on the input sequence (no wall clock, no randomness), so the same frames
give the same events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.ops import box_iou, match_max
from models.people.action import ActionForecaster
from models.people.pose_buffer import PoseBuffers
from models.people.tracking import ByteTracker
from models.results import FrameResult

__all__ = ["PeopleAnalytics", "match_poses_to_boxes"]

Event = tuple[str, dict[str, Any]]


@dataclass
class _TrackInfo:
    label: str
    first_pts: float
    last_pts: float
    frames: int = 1


@dataclass
class _Hysteresis:
    emitted: str | None = None
    candidate: str | None = None
    count: int = 0


class PeopleAnalytics:
    """Per-stream glue: tracker + pose buffers + forecaster + event hysteresis.

    Args:
        person_class_ids: detector class ids that are people (tracked; others get track -1).
        forecaster: the action forecaster, or None to track without forecasting.
        tracker_kwargs: keyword arguments for :class:`ByteTracker`.
        min_confidence: an ``action.forecast`` event needs the top probability >= this.
        min_persist: ... and the same top action in this many consecutive forecasts of that
            (track, horizon); an event is emitted only when that stable action changes
            (the first stable action of a track counts as a change).
        pose_conf_thresh: keypoint confidence below which the pose buffer treats it as occluded.
        max_tracks: bound on pose buffers kept at once.
    """

    def __init__(
        self,
        *,
        person_class_ids: set[int],
        forecaster: ActionForecaster | None,
        tracker_kwargs: dict[str, Any] | None = None,
        min_confidence: float = 0.6,
        min_persist: int = 2,
        pose_conf_thresh: float = 0.3,
        max_tracks: int = 256,
    ) -> None:
        if min_persist < 1:
            raise ValueError(f"min_persist must be >= 1, got {min_persist}")
        self.person_class_ids = {int(c) for c in person_class_ids}
        self.forecaster = forecaster
        self.tracker = ByteTracker(**(tracker_kwargs or {}))
        self.min_confidence = float(min_confidence)
        self.min_persist = int(min_persist)
        rate = forecaster.rate_hz if forecaster else 10.0
        window = forecaster.window_s if forecaster else 2.0
        self.buffers = PoseBuffers(
            max_tracks=max_tracks, rate_hz=rate, window_s=window, conf_thresh=pose_conf_thresh
        )
        self._tracks: dict[int, _TrackInfo] = {}
        self._hyst: dict[tuple[int, float], _Hysteresis] = {}
        self._last_pts: float | None = None

    def update(self, result: FrameResult) -> list[Event]:
        """Process one frame in stream order; mutates ``result`` and returns its events."""
        pts = float(result.pts)
        self._last_pts = pts
        det = result.detections
        is_person = np.isin(det.class_id, list(self.person_class_ids))
        upd = self.tracker.update(det[is_person], result.frame_idx)
        track_id = np.full(len(det), -1, np.int64)
        track_id[is_person] = upd.detections.track_id
        det.track_id = track_id

        events: list[Event] = []
        for tid in upd.ended:
            events.append(self._end_event(tid))
        for tid in upd.started:
            row = int(np.flatnonzero(track_id == tid)[0])
            label = self._label(result, int(det.class_id[row]))
            self._tracks[tid] = _TrackInfo(label, pts, pts, 0)
            events.append(("track.start", {"track": tid, "label": label}))
        for tid in track_id[track_id >= 0]:
            info = self._tracks[int(tid)]
            info.last_pts = pts
            info.frames += 1

        # Poses -> tracks, then into the buffers.
        poses = result.poses
        tracked_rows = np.flatnonzero(track_id >= 0)
        pose_track = np.full(len(poses), -1, np.int64)
        if len(poses) and len(tracked_rows):
            pairs = match_poses_to_boxes(poses.keypoints, det.xyxy[tracked_rows])
            for p, b in pairs:
                pose_track[p] = track_id[tracked_rows[b]]
        poses.track_id = pose_track
        seen: list[int] = []
        for p in np.flatnonzero(pose_track >= 0):
            tid = int(pose_track[p])
            self.buffers.push(tid, pts, poses.keypoints[p])
            seen.append(tid)

        if self.forecaster is not None and seen:
            windows = self.buffers.windows(pts, sorted(seen))
            forecasts = self.forecaster.forecast(windows)
            result.forecasts = forecasts
            for f in forecasts:
                ev = self._hysteresis(f.track_id, f.horizon_s, f.action, f.p)
                if ev:
                    events.append(
                        (
                            "action.forecast",
                            {
                                "track": f.track_id,
                                "action": f.action,
                                "horizon_s": f.horizon_s,
                                "p": f.p,
                                "probs": dict(f.probs),
                            },
                        )
                    )
        return events

    def finish(self) -> list[Event]:
        """End of stream: ``track.end`` for every open track (increasing id), then forget them."""
        ids = sorted(self.tracker.finish())
        events = [self._end_event(tid) for tid in ids]
        self.reset()
        return events

    def reset(self) -> None:
        """Stream reset (pts went backwards, resolution changed): forget all state, no events.

        Call :meth:`finish` first if the open tracks should be reported as ended.
        """
        self.tracker.reset()
        self.buffers.reset()
        self._tracks.clear()
        self._hyst.clear()
        self._last_pts = None

    # ----------------------------------------------------------------------------------------

    def _label(self, result: FrameResult, class_id: int) -> str:
        return result.class_name(class_id) if result.class_names else "person"

    def _end_event(self, tid: int) -> Event:
        info = self._tracks.pop(tid, None)
        self.buffers.drop(tid)
        for key in [k for k in self._hyst if k[0] == tid]:
            del self._hyst[key]
        if info is None:
            return ("track.end", {"track": tid, "label": "person", "frames": 0, "duration_s": 0.0})
        return (
            "track.end",
            {
                "track": tid,
                "label": info.label,
                "frames": info.frames,
                "duration_s": round(info.last_pts - info.first_pts, 6),
            },
        )

    def _hysteresis(self, tid: int, horizon: float, action: str, p: float) -> bool:
        """Update one (track, horizon)'s state; True when an event should be emitted."""
        h = self._hyst.setdefault((tid, horizon), _Hysteresis())
        if p < self.min_confidence:
            h.candidate, h.count = None, 0
            return False
        if action == h.candidate:
            h.count += 1
        else:
            h.candidate, h.count = action, 1
        if h.count >= self.min_persist and h.candidate != h.emitted:
            h.emitted = h.candidate
            return True
        return False


def match_poses_to_boxes(
    keypoints: np.ndarray, boxes: np.ndarray, conf_thresh: float = 0.3
) -> list[tuple[int, int]]:
    """Assign poses to person boxes, one to one.

    Affinity of (pose, box) = mean of (fraction of the pose's visible keypoints inside the box)
    and (IoU of the visible keypoints' bounding box with the box); pairs with affinity < 0.3
    are never matched. Hungarian assignment maximises the summed affinity.

    Args:
        keypoints: ``(n, 17, 3)`` x, y pixels and confidence.
        boxes: ``(m, 4)`` xyxy pixels.

    Returns:
        ``(pose index, box index)`` pairs.
    """
    n, m = len(keypoints), len(boxes)
    if n == 0 or m == 0:
        return []
    aff = np.zeros((n, m))
    for i in range(n):
        vis = keypoints[i, :, 2] >= conf_thresh
        if not vis.any():
            continue
        xy = keypoints[i, vis, :2]
        inside = (
            (xy[:, None, 0] >= boxes[None, :, 0])
            & (xy[:, None, 0] <= boxes[None, :, 2])
            & (xy[:, None, 1] >= boxes[None, :, 1])
            & (xy[:, None, 1] <= boxes[None, :, 3])
        )
        kbox = np.array([[*xy.min(axis=0), *xy.max(axis=0)]])
        aff[i] = 0.5 * inside.mean(axis=0) + 0.5 * box_iou(kbox, boxes)[0]
    return match_max(aff, 0.3)
