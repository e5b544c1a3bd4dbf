"""The source stage: decode one input into its shared-memory ring, survive camera faults.

Two threads. The *reader* decodes (``stream.sources``; cameras through
:class:`~stream.sources.ResilientSource`, which reconnects with backoff) and hands each item to
a :class:`Handoff`. The *sender* (the stage's main thread) turns statuses into events and
messages, and sends a frame downstream only when one of the ring's slots is free (a credit).

- ``batch`` mode: the handoff holds one frame and the reader waits for room: lossless, in order.
- ``live`` mode: the reader never waits; a newer frame replaces a held one (latest wins) and
  each replaced frame is counted. At most ``runtime.live_inflight`` frames per stream are in the
  pipeline, so capture-to-publish latency stays bounded by a few inference times whatever the
  camera's rate. Drops are published as ``frame.dropped`` (``count`` since the last event,
  ``total``), at most one event per ``runtime.drop_event_interval_s``, plus a final one.

Watchdog: a camera that sends no packet for ``read_timeout_s`` is *silent* (the reader's read
times out: ``stream.offline`` reason ``silent``, then reconnect); a sender that holds a frame but
gets no slot back for ``runtime.blocked_warn_s`` is *downstream blocked* (a warning and an
``info`` report to the supervisor; the camera is not touched).

Messages downstream (see :mod:`pipeline.stages`): ``open`` once, when the input first delivers
a frame; ``event``; ``frame``; ``reset`` when the stream's per-stream state must start over
(resolution change, ``pts`` going backwards); ``eos`` at the end. A resolution change moves the
stream to a new ring; the old ring is freed once all its slots have come back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

from models.results import FrameResult
from pipeline.analytics import offline_event, online_event
from pipeline.logs import stream_logger
from pipeline.stages import StageContext
from stream import events as ev
from stream.transport import FrameRing

log = logging.getLogger(__name__)


class _Failure:
    """An exception raised in the reader thread, re-raised by the sender."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Handoff:
    """Reader -> sender hand-over: statuses in order and never dropped; frames by mode.

    ``live``: ``put_frame`` removes any frame not yet taken (counted in ``dropped``) and queues
    the new one. ``batch``: ``put_frame`` waits until the previous frame was taken.
    """

    def __init__(self, live: bool, should_stop: Callable[[], bool]) -> None:
        self.live = live
        self.should_stop = should_stop
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self.closed = False
        self.dropped = 0
        self.frames_in = 0

    def put_frame(self, frame: Any) -> None:
        with self._cond:
            self.frames_in += 1
            if self.live:
                before = len(self._items)
                self._items = deque(i for i in self._items if not _is_frame(i))
                self.dropped += before - len(self._items)
            else:
                while any(_is_frame(i) for i in self._items) and not self.should_stop():
                    self._cond.wait(0.1)
            self._items.append(frame)
            self._cond.notify_all()

    def put(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def take(self, frame_ok: bool, timeout_s: float) -> Any | None:
        """The next status; or the next frame if ``frame_ok``; None after ``timeout_s``."""
        with self._cond:
            deadline = time.monotonic() + timeout_s
            while True:
                if self._items and (frame_ok or not _is_frame(self._items[0])):
                    item = self._items.popleft()
                    self._cond.notify_all()
                    return item
                left = deadline - time.monotonic()
                if left <= 0 or (self.closed and not self._items):
                    return None
                self._cond.wait(left)

    def finished(self) -> bool:
        with self._cond:
            return self.closed and not self._items

    def frame_waiting(self) -> bool:
        with self._cond:
            return any(_is_frame(i) for i in self._items)


def _is_frame(item: Any) -> bool:
    return hasattr(item, "rgb")


def run_source(ctx: StageContext, cfg: dict[str, Any], src: dict[str, Any]) -> None:
    """Body of a source stage (``pipeline.workers.source_body``)."""
    SourceSender(ctx, cfg, src).run()


class SourceSender:
    """The sender half of a source stage; see the module docstring."""

    def __init__(self, ctx: StageContext, cfg: dict[str, Any], src: dict[str, Any]) -> None:
        from stream.sources import is_live_uri

        self.ctx, self.cfg, self.src = ctx, cfg, src
        rt = cfg["runtime"]
        self.live = rt["mode"] == "live"
        self.camera = is_live_uri(src["uri"])
        self.stream_id = src["stream_id"]
        self.log = stream_logger(log, self.stream_id)  # every line names the stream
        self.loop = bool(src.get("loop")) and not self.camera  # a camera never ends anyway
        self.slots = rt["ring_slots"]
        self.inflight = min(rt["live_inflight"], self.slots) if self.live else self.slots
        self.ring: FrameRing | None = None
        self.retired: list[tuple[FrameRing, set[int]]] = []
        self.free: list[int] = []
        # (ring name, slot) -> generation of the frame in it; a credit must name both, so a
        # late credit for a slot reclaimed after a downstream restart is recognised and ignored.
        self.outstanding: dict[tuple[str, int], int] = {}
        self.next_gen = 0
        self.reconnects = 0
        self.drops_restart = 0  # frames lost in a downstream stage that crashed
        self.opened = False
        self.online = False
        self.pending_online: Any = None
        self.last: Any = None
        self.drops_reported = 0
        self.sent = 0
        self.credits_seen = 0
        self.drops_extra = 0  # frames skipped before a keyframe after (re)connecting
        self.last_drop_event = time.monotonic()
        self.last_credit = time.monotonic()
        self.blocked_warned = False
        self.end: tuple[str, str] | None = None
        self._stop_reader = threading.Event()
        self.handoff = Handoff(self.live, self._reader_should_stop)
        ctx.stats_hook = self._stats

    def _stats(self, metrics: Any) -> None:
        sid = self.stream_id
        metrics.set_total("vigil_frames_in", self.handoff.frames_in, stream=sid)
        metrics.set_total("vigil_frames_dropped", self.handoff.dropped, stream=sid, reason="live")
        metrics.set_total(
            "vigil_frames_dropped",
            self.drops_extra - self.drops_restart,
            stream=sid,
            reason="keyframe",
        )
        metrics.set_total("vigil_frames_dropped", self.drops_restart, stream=sid, reason="restart")
        metrics.set_total("vigil_reconnects", self.reconnects, stream=sid)
        metrics.set("vigil_queue_depth", len(self.outstanding), stream=sid)
        metrics.set("vigil_queue_capacity", self.inflight, stream=sid)

    @property
    def frames_read(self) -> int:
        """Live: frames decoded so far (sent or dropped). Batch: frames sent downstream, which
        is every frame decoded except one still waiting in the handoff when a stop arrives
        (that frame is discarded, never half-processed)."""
        return self.handoff.frames_in if self.live else self.sent

    # --- reader thread -------------------------------------------------------------------

    def _reader_should_stop(self) -> bool:
        return self._stop_reader.is_set() or self.ctx.stopping()

    def _items(self) -> Iterator[Any]:
        from stream.sources import Backoff, ResilientSource, SourceStatus

        src = self.src
        kwargs = {
            "open_timeout_s": src.get("open_timeout_s", 10.0),
            "read_timeout_s": src.get("read_timeout_s", 5.0),
            "decoder": src.get("decoder", "auto"),
            "fps": src.get("fps"),
            "max_pixels": src.get("max_pixels"),
        }
        if self.camera:
            yield from ResilientSource(
                src["uri"],
                should_stop=self._reader_should_stop,
                open_kwargs=kwargs,
                backoff=Backoff(src.get("reconnect_base_s", 0.5), src.get("reconnect_max_s", 30)),
                max_attempts=src.get("reconnect_max_attempts"),
                stable_s=src.get("stable_s", 10.0),
                min_restart_interval_s=src.get("min_restart_interval_s", 1.0),
            )
            return
        source = self._opened_file
        if source is None:  # refused on open (too large): no frame, no ring; run() said why
            return
        realtime = src.get("realtime")
        pace = self.live if realtime is None else realtime
        yield SourceStatus("online", info=source.info, decoder=getattr(source, "decoder", ""))
        start = time.monotonic()
        try:
            for frame in source.frames():
                if pace:  # a recorded input played as a camera would deliver it
                    wait = start + frame.pts - time.monotonic()
                    if wait > 0:
                        time.sleep(min(wait, 1.0))
                frame.capture_wall = time.time()
                yield frame
                if self._reader_should_stop():
                    return
        finally:
            source.close()
        end = source.end
        yield SourceStatus("end", end.reason if end else "eof", detail=end.detail if end else "")

    def _read(self) -> None:
        try:
            for item in self._items():
                if _is_frame(item):
                    if not hasattr(item, "capture_wall"):
                        item.capture_wall = item.capture_ts
                    self.handoff.put_frame(item)
                else:
                    self.handoff.put(item)
                if self._reader_should_stop():
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the sender, which re-raises
            self.handoff.put(_Failure(exc))
        finally:
            self.handoff.close()

    # --- sender (main thread) -------------------------------------------------------------

    def run(self) -> None:
        from stream.redact import redact
        from stream.sources import LoopingSource, SourceError, open_source

        ctx = self.ctx
        if self.camera and self.src.get("loop"):
            self.log.warning(
                "loop ignored: %s is a camera (it is reconnected when it drops, never ends)",
                redact(self.src["uri"]),
            )
        if not self.camera:  # a bad file is the user's error: raise it before anything else
            kwargs = {
                "decoder": self.src.get("decoder", "auto"),
                "fps": self.src.get("fps"),
                "max_pixels": self.src.get("max_pixels"),
            }
            try:
                if self.loop:
                    self._opened_file = LoopingSource(
                        self.src["uri"], open_kwargs=kwargs, on_pass_end=self._pass_ended
                    )
                else:
                    self._opened_file = open_source(self.src["uri"], **kwargs)
            except SourceError as exc:
                if exc.reason != "too_large":
                    raise
                # Refused before any ring slot exists: say so, end the stream (offline event).
                self.log.error("refused: %s", exc)
                self._opened_file = None
                self.end = ("too_large", str(exc))
        self.out = ctx.push(ctx.endpoints.infer)
        self.credits = ctx.pull(ctx.endpoints.credit(self.stream_id))
        ctx.report("state", stream_id=self.stream_id, state="connecting")
        reader = threading.Thread(target=self._read, name=f"read-{self.stream_id}", daemon=True)
        reader.start()
        stopped = False
        try:
            while True:
                if ctx.stopping():
                    stopped = True
                    break
                ctx.check()
                self._drain_credits(0)
                can_send = self.ring is not None and bool(self.free)
                can_send = can_send and len(self.outstanding) < self.inflight
                blocked = not can_send and self.handoff.frame_waiting()
                item = self.handoff.take(frame_ok=can_send, timeout_s=0 if blocked else 0.02)
                if item is None:
                    if self.handoff.finished():
                        break
                    if blocked:
                        self._wait_credit()
                    self._maybe_drop_event(False)
                    continue
                if isinstance(item, _Failure):
                    raise item.exc
                if _is_frame(item):
                    self._send_frame(item)
                else:
                    self._status(item)
                self._maybe_drop_event(False)
            self._finish(stopped)
        finally:
            self._stop_reader.set()
            reader.join(timeout=1.0)
            rings = [r for r, _ in self.retired] + ([self.ring] if self.ring else [])
            for ring in rings:
                if self.outstanding:  # still read downstream: the supervisor unlinks it later
                    ring.owner = False
                ring.close()

    def _finish(self, stopped: bool) -> None:
        ctx = self.ctx
        self._maybe_drop_event(True)
        if stopped:
            reason, detail = "stopped", "stopped on request"
        elif self.end is not None:
            reason, detail = self.end
        else:
            reason, detail = "eof", ""
        if self.online or not self.camera:  # a camera already offline was reported so
            self._event(offline_event(self.stream_id, self.last, reason, self.frames_read, detail))
        self.log.info(
            "ended (%s): %d frames read%s",
            reason,
            self.frames_read,
            f"; {detail}" if detail else "",
        )
        ctx.send(
            self.out,
            {
                "kind": "eos",
                "stream_id": self.stream_id,
                "reason": reason,
                "frames_read": self.frames_read,
                "detail": detail,
            },
        )
        ctx.report("state", stream_id=self.stream_id, state="ended", sent=self.sent)
        # Keep the rings alive until every slot is back: downstream still reads from them.
        deadline = time.monotonic() + self.cfg["runtime"]["drain_timeout_s"]
        while self.outstanding and time.monotonic() < deadline:
            self._drain_credits(200)

    def _drain_credits(self, timeout_ms: int) -> None:
        first = True
        while True:
            msg = self.ctx.recv(self.credits, timeout_ms=timeout_ms if first else 0)
            first = False
            if msg is None:
                return
            credit = msg[0]
            if credit.get("reclaim"):
                self._reclaim()
                continue
            key = (credit.get("ring"), credit["slot"])
            if key not in self.outstanding or self.outstanding[key] != credit.get("gen"):
                continue  # a slot already reclaimed after a restart: stale
            self.last_credit = time.monotonic()
            self.credits_seen += 1
            self.blocked_warned = False
            self._free(*key)

    def _free(self, ring: str, slot: int) -> None:
        del self.outstanding[(ring, slot)]
        if self.ring is not None and ring == self.ring.name:
            self.free.append(slot)
            return
        for entry in list(self.retired):
            if entry[0].name == ring:
                entry[1].discard(slot)
                if not entry[1]:
                    entry[0].close()
                    self.retired.remove(entry)

    def _reclaim(self) -> None:
        """A stage downstream crashed and was restarted (the supervisor says so): frames it
        held will never come back, so take their slots back, counted as dropped."""
        lost = len(self.outstanding)
        for key in list(self.outstanding):
            self._free(*key)
        if lost:
            self.drops_restart += lost
            self.drops_extra += lost
            self.log.warning("%d frame(s) lost in a restarted stage", lost)

    def _wait_credit(self) -> None:
        """No slot free and a frame waiting: wait briefly for one; warn if downstream is stuck."""
        self._drain_credits(20)
        blocked = time.monotonic() - self.last_credit
        limit = self.cfg["runtime"]["blocked_warn_s"]
        # Only once frames have flowed: a pipeline still loading its model is not blocked.
        flowing = self.credits_seen > 0
        if blocked > limit and flowing and not self.blocked_warned and self.outstanding:
            self.blocked_warned = True
            self.log.warning(
                "downstream blocked: no ring slot back for %.0f s (camera still read)", blocked
            )
            self.ctx.report("info", stream_id=self.stream_id, blocked_s=round(blocked, 1))

    def _status(self, status: Any) -> None:
        kind = status.kind
        if kind == "online":
            self._log_online(status)
            self.pending_online = status
            self.drops_extra += status.skipped
            self._ensure_ring(status.info)
            self.ctx.report("state", stream_id=self.stream_id, state="streaming")
        elif kind == "reset":
            self.log.info("reset (%s): tracks and per-stream state start over", status.reason)
            if status.reason == "resolution" and status.info is not None:
                self._new_ring(status.info)
            self.ctx.send(
                self.out,
                {
                    "kind": "reset",
                    "stream_id": self.stream_id,
                    "reason": status.reason,
                    "width": status.info.width if status.info else None,
                    "height": status.info.height if status.info else None,
                    "frame": self.frames_read,
                },
            )
        elif kind in ("offline", "gave_up"):
            first_failure = self.last is None and status.attempt <= 1
            if kind == "gave_up" or self.online or first_failure:
                detail = status.detail
                if kind == "gave_up":
                    detail = f"gave up after {status.attempt} attempts: {detail}"
                    self.end = (status.reason, detail)
                    self.log.error("%s", detail)
                else:
                    self.log.warning("offline (%s): %s", status.reason, detail or "no detail")
                self._event(
                    offline_event(
                        self.stream_id, self.last, status.reason, self.frames_read, detail
                    )
                )
            self.online = False
            self.pending_online = None
            self.ctx.report("state", stream_id=self.stream_id, state="waiting")
        elif kind == "reconnect":
            self.reconnects += 1
            self.log.info(
                "reconnecting in %.1f s (attempt %d, after %s)",
                status.delay_s,
                status.attempt,
                status.reason,
            )
            self._event(
                self._at_last_frame(
                    "stream.reconnect",
                    reason=status.reason,
                    attempt=status.attempt,
                    delay_s=round(status.delay_s, 3),
                    detail=status.detail,
                )
            )
        elif kind == "end":
            self.end = (status.reason, status.detail)

    def _log_online(self, status: Any) -> None:
        from stream.redact import redact

        info = status.info
        how = f"attempt {status.attempt}" if self.camera else ("looping" if self.loop else "file")
        self.log.info(
            "online: %s (%dx%d, %.2f frames/s, decoder %s, %s)",
            redact(self.src["uri"]),
            info.width,
            info.height,
            info.fps,
            status.decoder or "software",
            how,
        )

    def _pass_ended(self, passes: int, end: Any) -> None:
        """Looping file (reader thread): one pass over the file ended; the next one starts."""
        if end.reason == "truncated":
            self.log.warning(
                "pass %d truncated after %d frames (%s); starting over",
                passes,
                end.frames_read,
                end.detail,
            )
        elif passes == 1:
            self.log.info(
                "end of the file after %d frames: starting over (pts and frame indexes go on)",
                end.frames_read,
            )
        else:
            self.log.debug("pass %d ended after %d frames: starting over", passes, end.frames_read)

    def _ensure_ring(self, info: Any) -> None:
        if self.ring is None:
            self._new_ring(info)
        if not self.opened:
            self.opened = True
            self.info = info
            self.ctx.send(
                self.out,
                {
                    "kind": "open",
                    "stream_id": self.stream_id,
                    "info": {
                        "width": info.width,
                        "height": info.height,
                        "fps": info.fps,
                        "codec": info.codec,
                        "time_base": [info.time_base.numerator, info.time_base.denominator],
                        "frame_count": info.frame_count,
                        "start_ts": info.start_ts,
                    },
                },
            )
        elif self.ring is not None and self.ring.slot_bytes < info.width * info.height * 3:
            self._new_ring(info)

    def _new_ring(self, info: Any) -> None:
        """A ring for frames of ``info``'s size; the old one retires until its slots return."""
        if self.ring is not None:
            if self.ring.slot_bytes == info.width * info.height * 3:
                return
            mine = {slot for ring, slot in self.outstanding if ring == self.ring.name}
            if mine:
                self.retired.append((self.ring, mine))
            else:
                self.ring.close()
        self.ring = FrameRing.create(self.slots, info.width * info.height * 3)
        self.ctx.report("ring", name=self.ring.name)
        # Slots still out belong to the old ring; they become free here when they come back.
        self.free = list(range(self.slots))

    def _send_frame(self, frame: Any) -> None:
        ctx = self.ctx
        if self.pending_online is not None:
            status, self.pending_online = self.pending_online, None
            event = online_event(self.stream_id, self.src["uri"], status.info, frame)
            event["decoder"] = status.decoder or "software"
            if self.camera:
                event["attempt"] = status.attempt
            self._event(event)
            self.online = True
        ctx.maybe_fault(frame.frame_idx)
        h, w = frame.rgb.shape[:2]
        if self.ring is None or self.ring.slot_bytes < h * w * 3:
            self._ensure_ring(SimpleNamespace(width=w, height=h))
        if not self.free:  # the ring changed under this frame; skip it (counted)
            self.drops_extra += 1
            return
        slot = self.free.pop(0)
        self.ring.write(slot, frame.rgb)
        self.next_gen += 1
        self.outstanding[(self.ring.name, slot)] = self.next_gen
        result = FrameResult(
            self.stream_id,
            frame.frame_idx,
            frame.pts,
            frame.capture_ts,
            w,
            h,
            stage_ts={"capture": frame.capture_wall, "decode": time.time()},
        )
        header, _ = result.to_wire()
        ctx.send(
            self.out,
            {
                "kind": "frame",
                "addr": {**self.ring.address(slot, frame.rgb.shape), "gen": self.next_gen},
                "pts_raw": frame.pts_raw,
                "result": header,
            },
        )
        self.last = frame
        self.sent += 1

    def _maybe_drop_event(self, final: bool) -> None:
        total = self.handoff.dropped + self.drops_extra
        count = total - self.drops_reported
        if count <= 0 or (self.pending_online is not None and not final):
            return
        interval = self.cfg["runtime"]["drop_event_interval_s"]
        if not final and time.monotonic() - self.last_drop_event < interval:
            return
        self.last_drop_event = time.monotonic()
        self.drops_reported = total
        self._event(
            self._at_last_frame(
                "frame.dropped",
                on_stream_clock=True,
                count=count,
                total=total,
                frames_read=self.handoff.frames_in,
            )
        )

    def _at_last_frame(
        self, type_: str, on_stream_clock: bool = False, **fields: Any
    ) -> dict[str, Any]:
        """An event of this stream, stamped with the last frame sent (if any) and now; with
        ``on_stream_clock``, ``ts`` is that frame's capture time, like the events about frames
        (a file's clock is its container's, not the wall clock)."""
        last = self.last
        return ev.make_event(
            type_,
            self.stream_id,
            frame=last.frame_idx if last else None,
            pts=last.pts if last else None,
            ts=last.capture_ts if last and on_stream_clock else time.time(),
            **fields,
        )

    def _event(self, event: dict[str, Any]) -> None:
        self.ctx.send(self.out, {"kind": "event", "event": event})
