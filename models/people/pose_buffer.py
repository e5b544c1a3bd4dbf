"""Per-track pose history, resampled to a fixed rate and normalised for the action forecaster.

A camera delivers poses at its own, possibly irregular, frame rate, with keypoints that come and
go as limbs are occluded. The forecaster wants a fixed-length window sampled at a fixed rate
(``rate_hz``, 10 Hz by default) in a body-relative frame. :class:`PoseBuffer` keeps one track's
raw samples (pixels, pts seconds) in a bounded ring and produces that window on demand:

- resampling: each keypoint is linearly interpolated in time between the two raw samples around
  each output instant in which the keypoint was visible (confidence >= ``conf_thresh``); before
  its first / after its last visible sample it is held constant; never seen at all it sits at the
  window's origin;
- the third channel is 1.0 where the keypoint was visible in the raw sample nearest in time to
  the output instant, 0.0 where the value was filled;
- normalisation (one transform for the whole window, so translation and falls stay visible):
  origin = mid-hip at the *last* output instant, unit = median torso length (mid-shoulder to
  mid-hip) over the window; x to the right, y *down* (image convention).

:class:`PoseBuffers` holds one buffer per track with a bound on the number of tracks.
"""

from __future__ import annotations

from collections import OrderedDict, deque

import numpy as np

__all__ = ["PoseBuffer", "PoseBuffers", "normalise_window", "resample_track"]

_L_SHOULDER, _R_SHOULDER, _L_HIP, _R_HIP = 5, 6, 11, 12


class PoseBuffer:
    """Ring buffer of one track's keypoints with timestamps.

    Args:
        rate_hz: output sampling rate of :meth:`window`, Hz.
        window_s: output window length, seconds; the window has ``T = round(window_s * rate_hz)``
            steps, the last one at the query time.
        conf_thresh: keypoints with confidence below this count as occluded.
        max_samples: bound on the raw samples kept (older ones are dropped first).
    """

    def __init__(
        self,
        *,
        rate_hz: float = 10.0,
        window_s: float = 2.0,
        conf_thresh: float = 0.3,
        max_samples: int = 512,
    ) -> None:
        if rate_hz <= 0 or window_s <= 0:
            raise ValueError(f"rate_hz and window_s must be > 0, got {rate_hz}, {window_s}")
        self.rate_hz = float(rate_hz)
        self.window_s = float(window_s)
        self.conf_thresh = float(conf_thresh)
        self.steps = max(1, round(window_s * rate_hz))
        self._t: deque[float] = deque(maxlen=max_samples)
        self._kp: deque[np.ndarray] = deque(maxlen=max_samples)

    def __len__(self) -> int:
        return len(self._t)

    @property
    def span_s(self) -> float:
        """Seconds between the oldest and newest raw samples kept."""
        return self._t[-1] - self._t[0] if self._t else 0.0

    @property
    def last_t(self) -> float | None:
        return self._t[-1] if self._t else None

    def push(self, t: float, keypoints: np.ndarray) -> None:
        """Add one observation.

        Args:
            t: the frame's pts, seconds. A time not after the last one replaces that sample
                (same frame seen twice) or, if earlier, clears the buffer (stream went back).
            keypoints: ``(17, 3)`` x, y pixels and confidence, COCO-17 order.
        """
        kp = np.asarray(keypoints, np.float32).reshape(17, 3)
        if self._t and t <= self._t[-1]:
            if t == self._t[-1]:
                self._kp[-1] = kp
                return
            self.clear()
        self._t.append(float(t))
        self._kp.append(kp)
        # Keep only what one window (plus one sample on each side to interpolate) needs.
        horizon = self.window_s + 2.0 / self.rate_hz
        while len(self._t) > 2 and self._t[-1] - self._t[1] >= horizon:
            self._t.popleft()
            self._kp.popleft()

    def clear(self) -> None:
        self._t.clear()
        self._kp.clear()

    def ready(self, t_end: float | None = None) -> bool:
        """True when the raw samples cover the whole window ending at ``t_end`` (default: last)."""
        if not self._t:
            return False
        t_end = self._t[-1] if t_end is None else t_end
        t_start = t_end - (self.steps - 1) / self.rate_hz
        # Half a step of slack: a 15 fps camera never lands exactly on the 10 Hz grid.
        return self._t[0] <= t_start + 0.5 / self.rate_hz

    def window(self, t_end: float | None = None) -> np.ndarray | None:
        """The normalised window ending at ``t_end`` seconds (default: the last sample's time).

        Returns:
            ``(T, 17, 3) float32``: normalised x, y (torso lengths, origin at the last mid-hip)
            and the visible (1) / filled (0) flag; None when the history is shorter than the
            window (see :meth:`ready`).
        """
        if not self.ready(t_end):
            return None
        t_end = self._t[-1] if t_end is None else t_end
        times = t_end - (self.steps - 1 - np.arange(self.steps)) / self.rate_hz
        raw = resample_track(np.asarray(self._t), np.stack(self._kp), times, self.conf_thresh)
        return normalise_window(raw)


def resample_track(
    t: np.ndarray, keypoints: np.ndarray, times: np.ndarray, conf_thresh: float = 0.3
) -> np.ndarray:
    """Resample raw keypoints to the given instants, filling occluded keypoints.

    Args:
        t: ``(n,)`` increasing sample times, seconds.
        keypoints: ``(n, 17, 3)`` x, y pixels and confidence.
        times: ``(T,)`` output instants, seconds.
        conf_thresh: confidence below which a keypoint is treated as missing.

    Returns:
        ``(T, 17, 3) float32``: x, y pixels (NaN where a keypoint was never visible) and the
        visible flag (1 = visible in the raw sample nearest in time, 0 = filled).
    """
    t = np.asarray(t, np.float64)
    times = np.asarray(times, np.float64)
    kp = np.asarray(keypoints, np.float64)
    out = np.full((len(times), 17, 3), np.nan)
    nearest = np.clip(np.searchsorted(t, times), 0, len(t) - 1)
    prev = np.clip(nearest - 1, 0, len(t) - 1)
    nearest = np.where(np.abs(t[prev] - times) < np.abs(t[nearest] - times), prev, nearest)
    visible = kp[:, :, 2] >= conf_thresh
    for j in range(17):
        vis = visible[:, j]
        if not vis.any():
            out[:, j, 2] = 0.0
            continue
        tv = t[vis]
        # np.interp holds the end values outside [tv[0], tv[-1]], which is the hold-last rule.
        out[:, j, 0] = np.interp(times, tv, kp[vis, j, 0])
        out[:, j, 1] = np.interp(times, tv, kp[vis, j, 1])
        out[:, j, 2] = vis[nearest].astype(np.float64)
    return out.astype(np.float32)


def _mean_seen(xy: np.ndarray) -> np.ndarray:
    """``np.nanmean(xy, axis=1)`` without its "Mean of empty slice" warning: NaN where no
    keypoint of the row was seen (an expected case, e.g. both shoulders occluded)."""
    seen = np.isfinite(xy)
    count = seen.sum(axis=1)
    total = np.where(seen, xy, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def normalise_window(raw: np.ndarray) -> np.ndarray:
    """Body-relative coordinates for a resampled window (see the module docstring).

    Args:
        raw: ``(T, 17, 3)`` x, y pixels (NaN = never seen) and visible flag.

    Returns:
        ``(T, 17, 3) float32``: x, y in torso lengths relative to the last mid-hip, flag kept;
        never-seen keypoints are placed at the origin with flag 0.
    """
    xy = raw[:, :, :2].astype(np.float64)
    hips = _mean_seen(xy[:, [_L_HIP, _R_HIP]])  # (T, 2), NaN if neither hip seen
    shoulders = _mean_seen(xy[:, [_L_SHOULDER, _R_SHOULDER]])
    with np.errstate(all="ignore"):
        torso = np.linalg.norm(shoulders - hips, axis=1)
    centre_all = _mean_seen(xy)  # fallback origin: mean of seen keypoints
    origin = hips[-1] if np.all(np.isfinite(hips[-1])) else centre_all[-1]
    if not np.all(np.isfinite(origin)):
        origin = np.zeros(2)
    torso = torso[np.isfinite(torso) & (torso > 1e-3)]
    if len(torso):
        scale = float(np.median(torso))
    else:  # no torso: a third of the seen keypoints' vertical extent stands in for it
        with np.errstate(all="ignore"):
            extent = np.nanmax(xy[..., 1]) - np.nanmin(xy[..., 1])
        scale = float(extent) / 3 if np.isfinite(extent) and extent > 1e-3 else 1.0
    out = np.empty_like(raw, dtype=np.float32)
    norm = (xy - origin) / scale
    seen = np.isfinite(norm)
    out[:, :, :2] = np.where(seen, norm, 0.0)
    out[:, :, 2] = np.where(seen.all(axis=2), raw[:, :, 2], 0.0)
    return out


class PoseBuffers:
    """One :class:`PoseBuffer` per track, with a bound on how many tracks are kept.

    Args:
        max_tracks: when a new track would exceed this, the least recently updated one is dropped.
        **buffer_kwargs: passed to each :class:`PoseBuffer`.
    """

    def __init__(self, *, max_tracks: int = 256, **buffer_kwargs: float) -> None:
        if max_tracks < 1:
            raise ValueError(f"max_tracks must be >= 1, got {max_tracks}")
        self.max_tracks = max_tracks
        self._kwargs = buffer_kwargs
        self._buffers: OrderedDict[int, PoseBuffer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buffers)

    def __contains__(self, track_id: int) -> bool:
        return track_id in self._buffers

    def get(self, track_id: int) -> PoseBuffer | None:
        return self._buffers.get(track_id)

    def push(self, track_id: int, t: float, keypoints: np.ndarray) -> None:
        """Add ``(17, 3)`` keypoints (pixels, confidence) seen at ``t`` seconds to a track."""
        buf = self._buffers.get(track_id)
        if buf is None:
            buf = PoseBuffer(**self._kwargs)
            self._buffers[track_id] = buf
            while len(self._buffers) > self.max_tracks:
                self._buffers.popitem(last=False)
        self._buffers.move_to_end(track_id)
        buf.push(t, keypoints)

    def drop(self, track_id: int) -> None:
        """Forget a track (it ended)."""
        self._buffers.pop(track_id, None)

    def reset(self) -> None:
        self._buffers.clear()

    def windows(self, t_end: float, track_ids: list[int] | None = None) -> dict[int, np.ndarray]:
        """Normalised ``(T, 17, 3)`` windows ending at ``t_end`` for tracks with enough history.

        Args:
            t_end: the current pts, seconds.
            track_ids: restrict to these tracks (default: all), e.g. tracks seen in this frame.
        """
        ids = list(self._buffers) if track_ids is None else track_ids
        out: dict[int, np.ndarray] = {}
        for tid in ids:
            buf = self._buffers.get(tid)
            if buf is None:
                continue
            w = buf.window(t_end)
            if w is not None:
                out[tid] = w
        return out
