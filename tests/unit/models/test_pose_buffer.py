"""PoseBuffer: resampling to a fixed rate, occlusion filling, normalisation, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from models.people.pose_buffer import PoseBuffer, PoseBuffers, resample_track

TORSO_PX = 50.0


def walking_pose(t: float, speed_px_s: float = 30.0) -> np.ndarray:
    """A rigid upright skeleton translating right at ``speed_px_s``; torso = 50 px."""
    kp = np.zeros((17, 3), np.float32)
    x0 = 100 + speed_px_s * t
    kp[:, 0] = x0 + np.linspace(-10, 10, 17)
    kp[:, 1] = 200 + np.linspace(-60, 60, 17)
    kp[[5, 6], 1] = 150.0  # shoulders
    kp[[11, 12], 1] = 200.0  # hips
    kp[[5, 11], 0] = x0 - 10
    kp[[6, 12], 0] = x0 + 10
    kp[:, 2] = 0.9
    return kp


def test_resample_is_linear_whatever_the_camera_rate() -> None:
    times = np.linspace(0.1, 1.0, 10)
    for fps in (7.0, 15.0, 30.0):
        t = np.arange(0, 1.2, 1 / fps)
        kp = np.stack([walking_pose(x) for x in t])
        out = resample_track(t, kp, times)
        np.testing.assert_allclose(out[:, 0, 0], [walking_pose(x)[0, 0] for x in times], atol=1e-3)
        assert np.all(out[:, :, 2] == 1.0)


def test_window_shape_normalisation_and_readiness() -> None:
    buf = PoseBuffer(rate_hz=10, window_s=2.0)
    t = 0.0
    while t < 1.8:
        buf.push(t, walking_pose(t))
        t += 1 / 15
    assert not buf.ready() and buf.window() is None
    while t < 3.0:
        buf.push(t, walking_pose(t))
        t += 1 / 15
    w = buf.window()
    assert w is not None and w.shape == (20, 17, 3) and w.dtype == np.float32
    mid_hip = w[:, [11, 12], :2].mean(axis=1)
    np.testing.assert_allclose(mid_hip[-1], [0, 0], atol=1e-5)  # origin at the last mid-hip
    # Hips translate 30 px/s = 0.6 torso/s, so 0.06 torso per 10 Hz step; torso is one unit.
    np.testing.assert_allclose(np.diff(mid_hip[:, 0]), 0.6 / 10, atol=1e-4)
    torso = np.linalg.norm(w[:, [5, 6], :2].mean(axis=1) - mid_hip, axis=1)
    np.testing.assert_allclose(torso, 1.0, atol=1e-4)
    assert len(buf) <= 2.2 * 15 + 3  # old samples dropped: only one window (+ margins) kept


def test_occluded_keypoints_are_interpolated_and_flagged() -> None:
    buf = PoseBuffer(rate_hz=10, window_s=1.0, conf_thresh=0.3)
    for i in range(16):
        t = i / 15
        kp = walking_pose(t)
        if 5 <= i <= 9:
            kp[9] = (0, 0, 0.05)  # left wrist occluded (detector reports garbage position)
        if i >= 12:
            kp[16, 2] = 0.0  # right ankle lost at the end: held at its last position
        buf.push(t, kp)
    w = buf.window()
    assert w is not None
    full = PoseBuffer(rate_hz=10, window_s=1.0)
    for i in range(16):
        full.push(i / 15, walking_pose(i / 15))
    ref = full.window()
    np.testing.assert_allclose(w[:, 9, :2], ref[:, 9, :2], atol=1e-4)  # linear fill is exact
    flags = w[:, 9, 2]
    assert flags.min() == 0.0 and flags.max() == 1.0
    times = 1.0 - (9 - np.arange(10)) / 10
    hidden = (times > 4.5 / 15) & (times < 9.5 / 15)
    np.testing.assert_array_equal(flags == 0, hidden)
    assert np.all(w[-3:, 16, 2] == 0)
    assert np.all(np.diff(w[-3:, 16, 0]) == 0)


def test_never_seen_keypoint_at_origin_and_no_torso_fallback() -> None:
    buf = PoseBuffer(rate_hz=10, window_s=0.5)
    for i in range(8):
        kp = walking_pose(i / 10)
        kp[0, 2] = 0.0
        buf.push(i / 10, kp)
    w = buf.window()
    assert np.all(w[:, 0] == 0)
    assert np.all(np.isfinite(w))


def test_missing_shoulders_and_hips_are_handled_without_warnings() -> None:
    import warnings

    from models.people.pose_buffer import normalise_window

    raw = np.full((4, 17, 3), np.nan)
    raw[..., 2] = 0.0
    raw[:, 0] = [100.0, 50.0, 1.0]  # only the nose is seen: no torso, no hips
    raw[:, 15] = [100.0, 140.0, 1.0]  # and one ankle
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would raise here
        w = normalise_window(raw)
    assert np.all(np.isfinite(w))
    assert np.allclose(w[-1, 0, :2], [0.0, -1.5])  # origin: the seen points' mean; scale 90/3
    assert np.all(w[:, 5:7, 2] == 0)  # shoulders flagged unseen


def test_time_going_back_clears_and_duplicates_replace() -> None:
    buf = PoseBuffer(rate_hz=10, window_s=0.5)
    for i in range(10):
        buf.push(i / 10, walking_pose(i / 10))
    buf.push(0.9, walking_pose(0.0))
    assert len(buf) <= 10 and buf.last_t == 0.9
    buf.push(0.2, walking_pose(0.2))
    assert len(buf) == 1 and not buf.ready()


def test_pose_buffers_bound_and_drop() -> None:
    bufs = PoseBuffers(max_tracks=2, rate_hz=10, window_s=0.5)
    for tid in (1, 2, 3):
        for i in range(8):
            bufs.push(tid, i / 10, walking_pose(i / 10))
    assert len(bufs) == 2 and 1 not in bufs
    windows = bufs.windows(0.7)
    assert sorted(windows) == [2, 3] and windows[2].shape == (5, 17, 3)
    bufs.drop(2)
    assert sorted(bufs.windows(0.7)) == [3]
    assert bufs.windows(0.7, [99]) == {}
    bufs.reset()
    assert len(bufs) == 0
    with pytest.raises(ValueError):
        PoseBuffers(max_tracks=0)
