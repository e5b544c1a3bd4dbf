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
from stream.zsocket import (
    DEFAULT_MAX_SUBSCRIPTION_BYTES,
    CurveServerKeys,
    SocketLimits,
    server_socket,
)

log = logging.getLogger(__name__)


class VideoFileSink:
    """Write RGB frames to a video file, keeping each frame's ``pts`` in ``time_base`` units.

    ``time_base`` is the input's clock; it is kept here, not read back from the output stream,
    because the muxer may change the stream's time base when it writes the header (MP4 turns
    1/1000 into 1/16000 and 1/25 into 1/12800): frames are always stamped in the input's units
    and FFmpeg rescales each packet to whatever the container chose. Sizes that 4:2:0 chroma
    cannot hold (an odd width or height) are padded by one row or column, a copy of the last
    one, so every input pixel is kept. The file is written under a temporary name and renamed on
    :meth:`close`, so a crash never leaves a file that looks complete.
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
        self.time_base = Fraction(time_base)
        self.width, self.height = width, height
        # yuv420p needs even sizes: pad (never scale) so analysis pixels map 1:1 to the video.
        self.padded = (width + width % 2, height + height % 2)
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height = self.padded
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = self.time_base
        self._stream.codec_context.time_base = self.time_base
        if codec == "libx264":
            self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.frames_written = 0
        self._last_pts: int | None = None

    def write(self, rgb: np.ndarray, pts_raw: int) -> None:
        """Encode one ``(H, W, 3) uint8`` frame at ``pts_raw`` (units of ``time_base``)."""
        if self._last_pts is not None and pts_raw <= self._last_pts:
            pts_raw = self._last_pts + 1  # encoders need strictly increasing pts
        h, w = rgb.shape[:2]
        pad_w, pad_h = self.padded
        if (w, h) != (pad_w, pad_h):
            rgb = np.pad(rgb, ((0, max(pad_h - h, 0)), (0, max(pad_w - w, 0)), (0, 0)), "edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = pts_raw
        frame.time_base = self.time_base  # the input's clock, not the stream's (see class doc)
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


def encode_jpeg(rgb: np.ndarray, quality: int = 80) -> bytes | None:
    """An RGB frame as JPEG bytes (None when the encoder refuses it)."""
    ok, jpeg = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    return jpeg.tobytes() if ok else None


class JpegFrameFeed:
    """Latest-wins JPEG feed on a ZeroMQ PUB socket: ``[stream_id, header_json, jpeg]``.

    ``max_message_bytes`` caps what a subscriber may send (its subscriptions); ``curve``
    turns on CURVE (and the client allow-list), as on the event endpoints.
    """

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        *,
        quality: int = 80,
        max_message_bytes: int = DEFAULT_MAX_SUBSCRIPTION_BYTES,
        curve: CurveServerKeys | None = None,
    ) -> None:
        limits = SocketLimits(max_message_bytes=max_message_bytes, sndhwm=2, rcvhwm=1000)
        self._sock = server_socket(ctx, zmq.PUB, endpoint, limits=limits, curve=curve)
        self._quality = quality
        self.sent = 0
        self.dropped = 0

    def send(self, stream_id: str, rgb: np.ndarray, header: dict[str, Any]) -> None:
        jpeg = encode_jpeg(rgb, self._quality)
        if jpeg is None:
            self.dropped += 1
            return
        try:
            self._sock.send_multipart(
                [stream_id.encode(), json.dumps(header).encode(), jpeg], zmq.NOBLOCK
            )
            self.sent += 1
        except zmq.Again:
            self.dropped += 1

    def close(self) -> None:
        self._sock.close()


class EventPublisher:
    """Number, journal, record and publish events.

    Each event gets the next ``seq``: from the journal when one is given (committed there
    before anything else happens, and continuing after a restart), otherwise gap-free from
    ``first_seq``. It is then appended to the JSON lines file (if any) and flushed, handed to
    the Kafka sink (if any), and published as ``[type, json]`` on the PUB endpoint (if any) by
    a :class:`stream.replay.FeedServer` thread that also sends heartbeats and serves the
    replay endpoint (see that module for the wire protocol).
    With ``wait_subscribers`` > 0 the constructor waits, at most ``wait_timeout_s``, until that
    many event subscriptions have arrived, so that a subscriber started first misses nothing.
    The publisher owns the journal and Kafka sink it is given and closes them in :meth:`close`.
    ``curve_secret_key_file`` (a ``zmq.auth`` secret certificate) turns on CURVE encryption on
    the event and replay endpoints; ``curve_clients_dir`` then also admits only the clients
    whose public certificates are in that folder. ``max_subscription_bytes`` caps a message
    (subscription) from an event subscriber: a bigger one makes ZeroMQ drop that peer;
    ``replay_limits`` (keyword arguments of :class:`stream.replay.FeedServer`:
    ``max_message_bytes``, ``max_reply_bytes``, ``hwm``, ``max_clients``) bound what replay
    clients can make the process hold.

    The feed thread contains every bad message itself; should it still die, :meth:`check_feed`
    (called about once a second by the publish stage) starts a new one on the same endpoints.
    """

    def __init__(
        self,
        *,
        jsonl_path: str | Path | None = None,
        append: bool = False,
        ctx: zmq.Context | None = None,
        endpoint: str | None = None,
        first_seq: int = 1,
        wait_subscribers: int = 0,
        wait_timeout_s: float = 10.0,
        linger_ms: int = 2000,
        journal: Any = None,
        replay_endpoint: str | None = None,
        heartbeat_s: float | None = 1.0,
        kafka: Any = None,
        curve_secret_key_file: str | Path | None = None,
        curve_clients_dir: str | Path | None = None,
        sndhwm: int = 100_000,
        max_subscription_bytes: int = DEFAULT_MAX_SUBSCRIPTION_BYTES,
        replay_limits: dict[str, int] | None = None,
    ) -> None:
        from stream.replay import HEARTBEAT

        self._journal = journal
        self._kafka = kafka
        if kafka is not None and journal is not None:
            kafka.resume_from(journal)  # events journaled before a crash still reach Kafka
        self.next_seq = journal.head + 1 if journal is not None else first_seq
        self.published = 0
        self.live_dropped = 0
        self._file: TextIO | None = None
        if jsonl_path is not None:
            mode = "a" if append else "w"
            self._file = open(jsonl_path, mode, encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._pipe: zmq.Socket | None = None
        self._feed: Any = None
        self._ctx = ctx
        self._endpoint = endpoint
        self.feed_restarts = 0
        self._feed_args: dict[str, Any] = {}
        if replay_endpoint and not endpoint:
            raise ValueError("a replay endpoint needs an event endpoint too")
        if endpoint:
            if ctx is None:
                raise ValueError("an endpoint needs a zmq.Context")
            curve = CurveServerKeys.load(curve_secret_key_file, curve_clients_dir)
            # per subscriber; past it XPUB drops for that subscriber
            self._xpub_limits = SocketLimits(
                max_message_bytes=max_subscription_bytes, sndhwm=sndhwm, linger_ms=linger_ms
            )
            self._curve = curve
            sock = self._bind_xpub()
            hb_subscribed = False
            if wait_subscribers > 0:
                hb_subscribed = self._wait_for(sock, wait_subscribers, wait_timeout_s, HEARTBEAT)
            self._feed_args = {
                "journal_path": journal.path if journal is not None else None,
                "replay_endpoint": replay_endpoint,
                "heartbeat_s": heartbeat_s,
                "curve": curve,
                **(replay_limits or {}),
            }
            self._start_feed(sock, hb_subscribed)

    def _bind_xpub(self) -> zmq.Socket:
        assert self._ctx is not None and self._endpoint is not None
        sock = server_socket(
            self._ctx, zmq.XPUB, self._endpoint, limits=self._xpub_limits, curve=self._curve
        )
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # see every joiner, to greet it with a heartbeat
        return sock

    def _start_feed(self, sock: zmq.Socket, hb_subscribed: bool) -> None:
        from stream.replay import FeedServer

        assert self._ctx is not None
        pipe = f"inproc://vigil-feed-{id(self):x}-{self.feed_restarts}"
        try:
            feed = FeedServer(
                self._ctx, sock, pipe, heartbeat_subscribed=hb_subscribed, **self._feed_args
            )
        except BaseException:
            sock.close(linger=0)
            raise
        push = self._ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 100_000)
        push.setsockopt(zmq.LINGER, 5000)
        push.connect(pipe)
        self._pipe, self._feed = push, feed
        feed.start_and_wait()

    @property
    def feed_up(self) -> bool:
        """False while the feed thread is dead (until :meth:`check_feed` restarts it)."""
        return self._feed is None or self._feed.is_alive()

    def check_feed(self) -> bool:
        """Restart the feed thread if it died; True if it was found dead.

        Events published meanwhile are journaled: subscribers get them by replay (the
        heartbeat's head tells them they are behind). A failed restart is tried again at the
        next call."""
        if self._feed is None or self._feed.is_alive():
            return False
        log.error("event feed server down (%s); restarting it", self._feed.error)
        if self._pipe is not None:
            self._pipe.close(linger=0)
            self._pipe = None
        self.feed_restarts += 1
        try:
            self._start_feed(self._bind_xpub(), hb_subscribed=True)
        except Exception as exc:  # e.g. the old socket still holds the port: next call
            log.error("event feed server restart failed: %s; retrying", exc)
            self._feed = _DeadFeed(exc)
        return True

    @staticmethod
    def _wait_for(sock: zmq.Socket, count: int, timeout_s: float, heartbeat: bytes) -> bool:
        joined = 0
        hb = False
        deadline = time.monotonic() + timeout_s
        while joined < count and time.monotonic() < deadline:
            if sock.poll(100, zmq.POLLIN):
                msg = sock.recv()
                if msg[1:] == heartbeat:
                    hb = msg[:1] == b"\x01"
                elif msg[:1] == b"\x01":
                    joined += 1
        if joined < count:
            log.warning(
                "only %d of %d subscribers joined within %.1f s; publishing anyway",
                joined,
                count,
                timeout_s,
            )
        return hb

    def _curve_in_use(self) -> bool:
        curve = getattr(self, "_curve", None)
        return curve is not None and curve.clients_dir is not None

    @property
    def feed(self) -> Any:
        """The :class:`stream.replay.FeedServer` thread (None without an endpoint)."""
        return self._feed

    def publish(self, event: dict[str, Any], meta: dict[str, str] | None = None) -> dict[str, Any]:
        """Assign ``seq``, journal (committed, with ``meta``: see :meth:`EventJournal.append`),
        record, publish; returns the event."""
        if self._journal is not None:
            line = self._journal.append(event, meta)
        else:
            event["seq"] = self.next_seq
            line = ev.dumps(event)
        self.next_seq = event["seq"] + 1
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
        if self._kafka is not None:
            self._kafka.produce(event, line)
        if self._pipe is not None:
            try:
                self._pipe.send_multipart(
                    [event["type"].encode(), line.encode(), str(event["seq"]).encode()],
                    zmq.NOBLOCK,
                )
            except zmq.Again:  # feed thread stuck: journaled, so subscribers can still replay
                self.live_dropped += 1
        self.published += 1
        return event

    def close(self, timeout_s: float = 10.0) -> None:
        """Publish what is queued, stop the feed thread, close journal, file and Kafka sink."""
        if self._pipe is not None:
            from stream.replay import FeedServer

            try:
                self._pipe.send_multipart(FeedServer.stop_message(), zmq.NOBLOCK)
            except zmq.Again:
                log.warning("event feed queue full at close; live subscribers may miss the end")
            self._pipe.close()
            self._pipe = None
        if self._feed is not None:
            self._feed.join(timeout_s)
            if self._feed.is_alive():
                log.warning("event feed thread did not stop within %.1f s", timeout_s)
            self._feed = None
        if self._ctx is not None and self._curve_in_use():
            from stream.zsocket import release_authenticator

            release_authenticator(self._ctx)
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._kafka is not None:
            self._kafka.close()
            self._kafka = None
        if self._journal is not None:
            self._journal.close()
            self._journal = None


class _DeadFeed:
    """Stands for a feed thread that could not be restarted (retried at the next check)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        return None
