"""Staying connected: :class:`ResilientSource` keeps a camera open, reconnecting with
:class:`Backoff`, and tells its state changes as :class:`SourceStatus` items among the frames.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from stream.sources.base import EndOfStream, SourceError, SourceFrame, StreamInfo
from stream.sources.open import open_source


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: attempt ``n`` waits about
    ``min(cap_s, base_s * 2**(n-1))``, times a random factor in ``[1 - jitter, 1]``."""

    base_s: float = 0.5
    cap_s: float = 30.0
    jitter: float = 0.3

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        # 2**(n-1) overflows a float at n = 1025 (7 h of outage); past 2**62 the cap holds.
        raw = min(self.cap_s, self.base_s * 2.0 ** min(max(attempt - 1, 0), 62))
        return raw * (1.0 - self.jitter * (rng or random).random())


@dataclass
class SourceStatus:
    """A change in a camera's state, told in order with its frames.

    ``kind``: ``online`` (connected, first frame decoded), ``offline`` (lost: ``reason`` is
    ``silent``, ``lost``, ``eof`` or an open failure's reason), ``reconnect`` (about to retry
    after ``delay_s``), ``reset`` (``resolution`` or ``pts_backwards``: downstream per-stream
    state must start over), ``gave_up`` (``max_attempts`` failed opens in a row).
    """

    kind: str
    reason: str = ""
    attempt: int = 0
    detail: str = ""
    info: StreamInfo | None = None
    decoder: str = ""
    delay_s: float = 0.0
    skipped: int = 0


class ResilientSource:
    """Keep a camera connected: open, stream, and on any loss reconnect with backoff.

    Iterating yields :class:`SourceFrame` and :class:`SourceStatus` items in order. Frames get
    a ``frame_idx`` and a ``pts`` that keep increasing across reconnects (``pts`` is rebased so
    that it never goes backwards; a backwards jump is reported as a ``reset``). The attempt
    counter only starts over after a session that stayed up ``stable_s`` seconds, and two opens
    are at least ``min_restart_interval_s`` apart, so a flapping camera is retried at a bounded
    pace. ``should_stop`` is polled between frames and during waits.
    """

    def __init__(
        self,
        uri: str,
        *,
        should_stop: Callable[[], bool],
        open_kwargs: dict[str, Any] | None = None,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        stable_s: float = 10.0,
        min_restart_interval_s: float = 1.0,
        opener: Callable[..., Any] | None = None,
    ) -> None:
        self.uri = uri
        self.should_stop = should_stop
        self.open_kwargs = open_kwargs or {}
        self.backoff = backoff or Backoff()
        self.max_attempts = max_attempts
        self.stable_s = stable_s
        self.min_restart_interval_s = min_restart_interval_s
        self._open = opener or open_source
        self._rng = random.Random()
        self.frames_read = 0
        self.sessions = 0

    def __iter__(self) -> Iterator[SourceFrame | SourceStatus]:
        attempt = 0
        size: tuple[int, int] | None = None
        last_pts = -1.0
        offset = 0.0
        last_open = -1e9
        while not self.should_stop():
            wait = self.min_restart_interval_s - (time.monotonic() - last_open)
            if wait > 0 and not self._sleep(wait):
                return
            last_open = time.monotonic()
            try:
                source = self._open(self.uri, **self.open_kwargs)
            except SourceError as exc:
                attempt += 1
                if attempt == 1 and self.sessions == 0:
                    yield SourceStatus("offline", exc.reason, attempt, str(exc))
                if self.max_attempts is not None and attempt >= self.max_attempts:
                    yield SourceStatus("gave_up", exc.reason, attempt, str(exc))
                    return
                delay = self.backoff.delay(attempt, self._rng)
                yield SourceStatus("reconnect", exc.reason, attempt, str(exc), delay_s=delay)
                if not self._sleep(delay):
                    return
                continue
            started = time.monotonic()
            first = True
            session_base: float | None = None
            try:
                for frame in source.frames():
                    h, w = frame.rgb.shape[:2]
                    if first:
                        first = False
                        self.sessions += 1
                        info = source.info
                        info.width, info.height = w, h
                        yield SourceStatus(
                            "online",
                            attempt=attempt,
                            info=info,
                            decoder=getattr(source, "decoder", "software"),
                            skipped=getattr(source, "skipped_before_keyframe", 0),
                        )
                        if size is not None and size != (w, h):
                            yield SourceStatus("reset", "resolution", info=info)
                        size = (w, h)
                        # A new session's clock starts anywhere: continue after the last pts.
                        session_base = frame.pts
                        offset = last_pts + 1.0 / max(info.fps, 1.0) if last_pts >= 0 else 0.0
                    elif size != (w, h):
                        info = source.info
                        info.width, info.height = w, h
                        size = (w, h)
                        yield SourceStatus("reset", "resolution", info=info)
                    pts = offset + frame.pts - (session_base or 0.0)
                    if pts < last_pts:
                        yield SourceStatus(
                            "reset", "pts_backwards", detail=f"{pts:.3f} < {last_pts:.3f}"
                        )
                        offset += last_pts - pts + 1.0 / max(source.info.fps, 1.0)
                        pts = offset + frame.pts - (session_base or 0.0)
                    elif pts == last_pts:
                        pts = last_pts + 1e-3
                    last_pts = pts
                    frame.pts, frame.pts_raw = pts, int(round(pts * 90000))
                    frame.frame_idx = self.frames_read
                    self.frames_read += 1
                    yield frame
                    if self.should_stop():
                        return
            finally:
                source.close()
            if self.should_stop():
                return
            end = source.end or EndOfStream("lost", 0, "")
            if time.monotonic() - started >= self.stable_s:
                attempt = 0
            attempt += 1  # a session that ends (or never delivers a frame) is a failure too
            yield SourceStatus("offline", end.reason, attempt, end.detail)
            if self.max_attempts is not None and attempt >= self.max_attempts:
                yield SourceStatus("gave_up", end.reason, attempt, end.detail)
                return
            delay = self.backoff.delay(attempt, self._rng)
            yield SourceStatus("reconnect", end.reason, attempt, end.detail, delay_s=delay)
            if not self._sleep(delay):
                return

    def _sleep(self, seconds: float) -> bool:
        """Sleep in short steps; False if asked to stop meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.should_stop():
                return False
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        return not self.should_stop()
