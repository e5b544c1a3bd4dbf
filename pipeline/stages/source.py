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

Messages downstream (see :mod:`pipeline.protocol`): ``open`` once, when the input first delivers
a frame; ``event``; ``frame``; ``reset`` when the stream's per-stream state must start over
(resolution change, ``pts`` going backwards); ``eos`` at the end. A resolution change moves the
stream to a new ring; the old ring is freed once all its slots have come back.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from types import SimpleNamespace
from typing import Any

from models.results import FrameResult
from pipeline.config import VigilConfig
from pipeline.config_runtime import RuntimeConfig
from pipeline.config_sections import SourceConfig
from pipeline.events import at_last_frame, offline_event, online_event
from pipeline.graph.context import StageContext
from pipeline.graph.stage import Stage
from pipeline.logs import stream_logger
from pipeline.protocol import Kind, eos
from pipeline.stages.source_reader import (
    Failure,
    Handoff,
    is_frame,
    log_pass_end,
    read_into,
    read_items,
)
from stream.transport import FrameRing

log = logging.getLogger(__name__)


class SourceStage(Stage):
    """A source stage (the sender half, in the main thread); see the module docstring."""

    def __init__(self, ctx: StageContext, src: SourceConfig, runtime: RuntimeConfig) -> None:
        from stream.sources import is_live_uri

        super().__init__(ctx)
        self.src, self.rt = src, runtime
        self.live = runtime.mode == "live"
        self.camera = is_live_uri(src.uri)
        self.stream_id = src.stream_id
        self.log = stream_logger(log, self.stream_id)  # every line names the stream
        self.loop = src.loop and not self.camera  # a camera never ends anyway
        self.slots = runtime.ring_slots
        self.inflight = min(runtime.live_inflight, self.slots) if self.live else self.slots
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
        self.reader: threading.Thread | None = None
        ctx.stats_hook = self._stats

    @classmethod
    def from_config(cls, ctx: StageContext, cfg: VigilConfig, src: dict) -> SourceStage:
        """The stage of source ``src`` (one of ``cfg.sources``, or added at runtime)."""
        return cls(ctx, SourceConfig.model_validate(src), cfg.runtime)

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

    # --- sender (main thread) -------------------------------------------------------------

    def _open_kwargs(self) -> dict[str, Any]:
        return {"decoder": self.src.decoder, "fps": self.src.fps, "max_pixels": self.src.max_pixels}

    def setup(self) -> None:
        from stream.redact import redact
        from stream.sources import LoopingSource, SourceError, open_source
        ctx = self.ctx
        if self.camera and self.src.loop:
            self.log.warning(
                "loop ignored: %s is a camera (it is reconnected when it drops, never ends)",
                redact(self.src.uri),
            )
        opened = None
        if not self.camera:  # a bad file is the user's error: raise it before anything else
            kwargs = self._open_kwargs()
            try:
                if self.loop:
                    opened = LoopingSource(
                        self.src.uri,
                        open_kwargs=kwargs,
                        on_pass_end=partial(log_pass_end, self.log),
                    )
                else:
                    opened = open_source(self.src.uri, **kwargs)
            except SourceError as exc:
                if exc.reason != "too_large":
                    raise
                # Refused before any ring slot exists: say so, end the stream (offline event).
                self.log.error("refused: %s", exc)
                self.end = ("too_large", str(exc))
        self.out = ctx.push(ctx.endpoints.infer)
        self.credits = ctx.pull(ctx.endpoints.credit(self.stream_id))
        ctx.report(Kind.STATE, stream_id=self.stream_id, state="connecting")
        items = read_items(
            self.src,
            camera=self.camera,
            live=self.live,
            opened=opened,
            open_kwargs=self._open_kwargs(),
            should_stop=self._reader_should_stop,
        )
        self.reader = threading.Thread(
            target=read_into, args=(self.handoff, items, self._reader_should_stop),
            name=f"read-{self.stream_id}", daemon=True,
        )  # fmt: skip
        self.reader.start()

    def run(self) -> None:
        """Hand each item of the reader on (:meth:`on_message`) as ring slots allow, until the
        input ends (:meth:`on_end`) or a stop is asked (:meth:`on_end` too: ``stopped``)."""
        ctx = self.ctx
        self.stopped = False
        try:
            self.setup()
            while True:
                if ctx.stopping():
                    self.stopped = True
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
                    self.on_tick()
                    continue
                self.on_message(item, {})
            self.on_end()
        finally:
            self.close()

    def on_message(self, item: Any, arrays: dict[str, Any]) -> None:
        """One item of the reader: a frame to send, a status, or its failure."""
        if isinstance(item, Failure):
            raise item.exc
        if is_frame(item):
            self._send_frame(item)
        else:
            self._status(item)
        self._maybe_drop_event(False)

    def on_tick(self) -> None:
        self._maybe_drop_event(False)

    def close(self) -> None:
        self._stop_reader.set()
        if self.reader is not None:
            self.reader.join(timeout=1.0)
        rings = [r for r, _ in self.retired] + ([self.ring] if self.ring else [])
        for ring in rings:
            if self.outstanding:  # still read downstream: the supervisor unlinks it later
                ring.owner = False
            ring.close()

    def on_end(self) -> None:
        ctx = self.ctx
        self._maybe_drop_event(True)
        if self.stopped:
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
        ctx.send(self.out, eos(self.stream_id, reason, self.frames_read, detail))
        ctx.report(Kind.STATE, stream_id=self.stream_id, state="ended", sent=self.sent)
        # Keep the rings alive until every slot is back: downstream still reads from them.
        deadline = time.monotonic() + self.rt.drain_timeout_s
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
        limit = self.rt.blocked_warn_s
        # Only once frames have flowed: a pipeline still loading its model is not blocked.
        flowing = self.credits_seen > 0
        if blocked > limit and flowing and not self.blocked_warned and self.outstanding:
            self.blocked_warned = True
            self.log.warning(
                "downstream blocked: no ring slot back for %.0f s (camera still read)", blocked
            )
            self.ctx.report(Kind.INFO, stream_id=self.stream_id, blocked_s=round(blocked, 1))

    def _status(self, status: Any) -> None:
        kind = status.kind
        if kind == "online":
            self._log_online(status)
            self.pending_online = status
            self.drops_extra += status.skipped
            self._ensure_ring(status.info)
            self.ctx.report(Kind.STATE, stream_id=self.stream_id, state="streaming")
        elif kind == "reset":
            self.log.info("reset (%s): tracks and per-stream state start over", status.reason)
            if status.reason == "resolution" and status.info is not None:
                self._new_ring(status.info)
            self.ctx.send(
                self.out,
                {
                    "kind": Kind.RESET,
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
            self.ctx.report(Kind.STATE, stream_id=self.stream_id, state="waiting")
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
            redact(self.src.uri),
            info.width,
            info.height,
            info.fps,
            status.decoder or "software",
            how,
        )

    def _ensure_ring(self, info: Any) -> None:
        if self.ring is None:
            self._new_ring(info)
        if not self.opened:
            self.opened = True
            self.info = info
            self.ctx.send(
                self.out,
                {
                    "kind": Kind.OPEN,
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
        self.ctx.report(Kind.RING, name=self.ring.name)
        # Slots still out belong to the old ring; they become free here when they come back.
        self.free = list(range(self.slots))

    def _send_frame(self, frame: Any) -> None:
        ctx = self.ctx
        if self.pending_online is not None:
            status, self.pending_online = self.pending_online, None
            event = online_event(self.stream_id, self.src.uri, status.info, frame)
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
                "kind": Kind.FRAME,
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
        interval = self.rt.drop_event_interval_s
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
        """An event of this stream stamped with the last frame sent (see
        :func:`pipeline.events.at_last_frame`)."""
        return at_last_frame(type_, self.stream_id, self.last, on_stream_clock, **fields)

    def _event(self, event: dict[str, Any]) -> None:
        self.ctx.send(self.out, {"kind": Kind.EVENT, "event": event})
