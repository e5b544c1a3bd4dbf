"""Sinks: the annotated video file, the JPEG frame feed and the event publisher.

- :class:`VideoFileSink` re-encodes frames with the input's timestamps (same ``pts`` in the
  same time base), so the annotated video lines up frame for frame with its source.
- :class:`JpegFrameFeed` publishes annotated frames on a ZeroMQ PUB socket, topic = stream id,
  latest-wins: a frame that cannot be queued at once is dropped and counted.
- :class:`EventPublisher` assigns the gap-free ``seq``, appends each event to ``events.jsonl``
  and then publishes it on a ZeroMQ PUB socket (topic = event type).
"""

from __future__ import annotations

import json
import logging
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

import av
import cv2
import numpy as np
import zmq

from stream import events as ev

log = logging.getLogger(__name__)


class VideoFileSink:
    """Write RGB frames to a video file, keeping each frame's ``pts`` in ``time_base`` units.

    The file is written under a temporary name and renamed on :meth:`close`, so a crash never
    leaves a file that looks complete.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        fps: float,
        time_base: Fraction,
        codec: str = "libx264",
        crf: int = 23,
    ) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._container = av.open(str(self._tmp), mode="w")
        rate = Fraction(fps).limit_denominator(1001 * 1000) if fps > 0 else Fraction(25)
        if codec not in av.codecs_available:
            codec = "mpeg4"
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = time_base
        self._stream.codec_context.time_base = time_base
        if codec == "libx264":
            self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.frames_written = 0
        self._last_pts: int | None = None

    def write(self, rgb: np.ndarray, pts_raw: int) -> None:
        if self._last_pts is not None and pts_raw <= self._last_pts:
            pts_raw = self._last_pts + 1  # encoders need strictly increasing pts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = pts_raw
        frame.time_base = self._stream.time_base
        self._container.mux(self._stream.encode(frame))
        self._last_pts = pts_raw
        self.frames_written += 1

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))
        self._container.close()
        self._tmp.replace(self.path)

    def abort(self) -> None:
        try:
            self._container.close()
        finally:
            self._tmp.unlink(missing_ok=True)


class JpegFrameFeed:
    """Latest-wins JPEG feed on a ZeroMQ PUB socket: ``[stream_id, header_json, jpeg]``."""

    def __init__(self, ctx: zmq.Context, endpoint: str, *, quality: int = 80) -> None:
        self._sock = ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, 2)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(endpoint)
        self._quality = quality
        self.sent = 0
        self.dropped = 0

    def send(self, stream_id: str, rgb: np.ndarray, header: dict[str, Any]) -> None:
        ok, jpeg = cv2.imencode(
            ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self._quality]
        )
        if not ok:
            self.dropped += 1
            return
        try:
            self._sock.send_multipart(
                [stream_id.encode(), json.dumps(header).encode(), jpeg.tobytes()], zmq.NOBLOCK
            )
            self.sent += 1
        except zmq.Again:
            self.dropped += 1

    def close(self) -> None:
        self._sock.close()


class EventPublisher:
    """Number, record and publish events.

    Each event gets the next ``seq`` (gap-free from ``first_seq``), is appended to the JSON
    lines file (if any) and flushed, then sent as ``[type, json]`` on the PUB endpoint (if any).
    With ``wait_subscribers`` > 0 the constructor waits, at most ``wait_timeout_s``, until that
    many subscribers have joined, so that a subscriber started first misses nothing.
    """

    def __init__(
        self,
        *,
        jsonl_path: str | Path | None = None,
        ctx: zmq.Context | None = None,
        endpoint: str | None = None,
        first_seq: int = 1,
        wait_subscribers: int = 0,
        wait_timeout_s: float = 10.0,
        linger_ms: int = 2000,
    ) -> None:
        self.next_seq = first_seq
        self.published = 0
        self._file: TextIO | None = None
        if jsonl_path is not None:
            self._file = open(jsonl_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._sock: zmq.Socket | None = None
        if endpoint:
            if ctx is None:
                raise ValueError("an endpoint needs a zmq.Context")
            self._sock = ctx.socket(zmq.XPUB)
            self._sock.setsockopt(zmq.LINGER, linger_ms)
            self._sock.setsockopt(zmq.SNDHWM, 100_000)
            self._sock.bind(endpoint)
            if wait_subscribers > 0:
                self._wait_for(wait_subscribers, wait_timeout_s)

    def _wait_for(self, count: int, timeout_s: float) -> None:
        assert self._sock is not None
        joined = 0
        deadline = time.monotonic() + timeout_s
        while joined < count and time.monotonic() < deadline:
            if self._sock.poll(100, zmq.POLLIN):
                msg = self._sock.recv()
                if msg[:1] == b"\x01":
                    joined += 1
        if joined < count:
            log.warning(
                "only %d of %d subscribers joined within %.1f s; publishing anyway",
                joined,
                count,
                timeout_s,
            )

    def publish(self, event: dict[str, Any]) -> dict[str, Any]:
        """Assign ``seq``, record, publish; returns the event as published."""
        event["seq"] = self.next_seq
        self.next_seq += 1
        line = ev.dumps(event)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
        if self._sock is not None:
            self._sock.send_multipart([event["type"].encode(), line.encode()])
        self.published += 1
        return event

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._sock is not None:
            self._sock.close()  # LINGER lets queued events reach connected subscribers
            self._sock = None
