"""Live sources against a real RTSP server (GStreamer), one test per camera fault.

The server (``stream/sim/camera.py``) runs under Debian's python3 as a subprocess; tests that
need it are skipped, with the apt-get line to run, where GStreamer is missing.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.redact import redact
from stream.sim.camera import RtspTestServer, free_port, missing_requirements
from stream.sources import (
    Backoff,
    ImageDirSource,
    ResilientSource,
    SourceError,
    SourceFrame,
    SourceStatus,
    open_source,
    probe_source,
)

_MISSING = missing_requirements()
needs_rtsp = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


@pytest.fixture
def camera() -> Iterator[RtspTestServer]:
    srv = RtspTestServer(width=160, height=96, fps=15).start()
    yield srv
    srv.stop()


def _resilient(url: str, stop: threading.Event, **kw: object) -> ResilientSource:
    return ResilientSource(
        url,
        should_stop=stop.is_set,
        open_kwargs={"open_timeout_s": 3.0, "read_timeout_s": 1.5, "decoder": "auto"},
        backoff=Backoff(0.2, 1.0),
        min_restart_interval_s=0.2,
        **kw,  # type: ignore[arg-type]
    )


def test_backoff_is_exponential_capped_and_jittered() -> None:
    b = Backoff(base_s=0.5, cap_s=4.0, jitter=0.3)
    rng = random.Random(0)
    delays = [b.delay(n, rng) for n in range(1, 9)]
    for n, d in enumerate(delays, start=1):
        raw = min(4.0, 0.5 * 2 ** (n - 1))
        assert 0.7 * raw <= d <= raw
    assert max(delays) <= 4.0
    assert len({round(d, 6) for d in delays[-4:]}) > 1  # jitter spreads retries of many cameras


def test_unreachable_camera_at_startup_retries_boundedly_then_gives_up() -> None:
    """A camera that is never reachable: bounded retries with backoff, no hang, clear reason."""
    stop = threading.Event()
    url = f"rtsp://127.0.0.1:{free_port()}/nothing"
    t0 = time.monotonic()
    items = list(_resilient(url, stop, max_attempts=4))
    elapsed = time.monotonic() - t0
    assert not any(isinstance(i, SourceFrame) for i in items)
    kinds = [(i.kind, i.attempt) for i in items]
    assert kinds[0] == ("offline", 1) and kinds[-1] == ("gave_up", 4)
    assert [a for k, a in kinds if k == "reconnect"] == [1, 2, 3]
    assert all(i.reason == "unreachable" for i in items)
    assert elapsed < 10


def test_stop_interrupts_backoff_promptly() -> None:
    stop = threading.Event()
    src = ResilientSource(
        f"rtsp://127.0.0.1:{free_port()}/x",
        should_stop=stop.is_set,
        backoff=Backoff(30.0, 30.0, jitter=0.0),
        open_kwargs={"open_timeout_s": 1.0},
    )
    threading.Timer(0.5, stop.set).start()
    t0 = time.monotonic()
    list(src)
    assert time.monotonic() - t0 < 3.0


@needs_rtsp
def test_server_killed_midstream_goes_offline_and_reconnects(camera: RtspTestServer) -> None:
    """Server killed mid-stream: offline within the read timeout, back when it returns, with
    frame indices and pts that keep increasing across the reconnect."""
    stop = threading.Event()
    frames: list[SourceFrame] = []
    statuses: list[tuple[float, SourceStatus]] = []
    killed_at = restarted = None
    t0 = time.monotonic()
    for item in _resilient(camera.url, stop):
        now = time.monotonic()
        if isinstance(item, SourceStatus):
            statuses.append((now, item))
        else:
            frames.append(item)
        if len(frames) == 10 and killed_at is None:
            camera.stop()
            killed_at = now
        if killed_at and not restarted and now - killed_at > 1.5:
            camera.start()
            restarted = now
        online = [s for _, s in statuses if s.kind == "online"]
        if len(online) == 2 and len(frames) >= 20:
            break
        assert now - t0 < 40, [s.kind for _, s in statuses]
    kinds = [s.kind for _, s in statuses]
    assert kinds[0] == "online" and "offline" in kinds and "reconnect" in kinds
    offline_at = next(t for t, s in statuses if s.kind == "offline")
    assert offline_at - killed_at < 3.0
    assert all(s.info.width == 160 for _, s in statuses if s.kind == "online")
    idx = [f.frame_idx for f in frames]
    pts = [f.pts for f in frames]
    assert idx == list(range(len(frames)))
    assert all(b > a for a, b in zip(pts, pts[1:]))


@needs_rtsp
def test_silent_camera_fires_watchdog_and_no_fake_frames(camera: RtspTestServer) -> None:
    """Connected but no packets (server SIGSTOPped): offline ``silent`` after the read timeout
    and not one frame is produced while the camera is frozen."""
    stop = threading.Event()
    paused_at = None
    paused_pts = 0.0
    late: list[SourceFrame] = []
    silent_at = None
    first: tuple[float, float] | None = None  # (arrival, pts) of the first frame
    t0 = time.monotonic()
    for item in _resilient(camera.url, stop):
        now = time.monotonic()
        if isinstance(item, SourceFrame):
            first = first or (now, item.pts)
            if paused_at is None and item.frame_idx >= 5:
                camera.pause()
                paused_at, paused_pts = now, item.pts
            elif paused_at is not None:
                late.append(item)
        elif item.kind == "offline":
            assert item.reason == "silent", item
            silent_at = now
            camera.resume()
            break
        assert now - t0 < 30
    assert silent_at is not None and 1.0 < silent_at - paused_at < 5.0
    # Frames after the freeze are real ones the server sent before it (the one the H.264
    # parser still held, and any still in our socket if this test lagged behind the stream):
    # none is repeated, none is newer than the server's clock at the freeze (it streams in
    # real time from the first frame on), nothing is invented to fill the silence.
    server_pts_at_freeze = first[1] + (paused_at - first[0])
    assert all(f.pts <= server_pts_at_freeze + 0.3 for f in late), (late, server_pts_at_freeze)
    late_pts = [paused_pts, *(f.pts for f in late)]
    assert all(b > a for a, b in zip(late_pts, late_pts[1:]))


@needs_rtsp
def test_resolution_change_midstream_resets_instead_of_crashing(camera: RtspTestServer) -> None:
    stop = threading.Event()
    sizes: list[tuple[int, int]] = []
    resets = []
    t0 = time.monotonic()
    for item in _resilient(camera.url, stop):
        if isinstance(item, SourceFrame):
            sizes.append(item.rgb.shape[1::-1])
            if len(sizes) == 5:
                camera.restart(width=128, height=80)
            if item.rgb.shape[1] == 128:
                break
        elif item.kind == "reset":
            resets.append(item)
        assert time.monotonic() - t0 < 40
    assert sizes[0] == (160, 96) and sizes[-1] == (128, 80)
    assert [r.reason for r in resets] == ["resolution"]
    assert (resets[0].info.width, resets[0].info.height) == (128, 80)


@needs_rtsp
def test_wrong_credentials_clear_error_backoff_and_no_secret() -> None:
    with RtspTestServer(user="alice", password="s3cret-pw") as srv:
        bad = srv.url_with("alice", "wrong-pw")
        with pytest.raises(SourceError) as err:
            open_source(bad, open_timeout_s=3.0)
        assert err.value.reason == "auth"
        assert "wrong-pw" not in str(err.value) and "authentication" in str(err.value)
        stop = threading.Event()
        items = list(_resilient(bad, stop, max_attempts=2))
        assert [i.kind for i in items] == ["offline", "reconnect", "gave_up"]
        assert all(i.reason == "auth" and "wrong-pw" not in i.detail for i in items)
        good = open_source(srv.url_with("alice", "s3cret-pw"), open_timeout_s=5.0)
        assert good.info.uri == redact(srv.url_with("alice", "s3cret-pw"))
        assert "s3cret" not in good.info.uri
        good.close()


def test_image_dir_source_sorted_fixed_fps(tmp_path: Path) -> None:
    for i in (2, 0, 1):
        img = np.full((48, 64, 3), 40 * i, np.uint8)
        cv2.imwrite(str(tmp_path / f"img_{i:03d}.png"), img)
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(str(tmp_path), fps=5)
    assert isinstance(src, ImageDirSource) and src.info.frame_count == 3
    frames = list(src.frames())
    assert [int(f.rgb[0, 0, 0]) for f in frames] == [0, 40, 80]
    assert [f.pts for f in frames] == pytest.approx([0.0, 0.2, 0.4])
    assert src.end is not None and src.end.reason == "eof"
    assert probe_source(str(tmp_path)) == 3


def test_usb_missing_device_and_bad_uris() -> None:
    with pytest.raises(SourceError) as err:
        open_source("/dev/video99")
    assert err.value.reason == "unreachable"
    with pytest.raises(SourceError):
        probe_source("rtsp://")
    assert probe_source("rtsp://user:pw@127.0.0.1:1/cam") is None  # cameras are not probed
