"""The analytics stage: per-stream analytics (:class:`pipeline.analytics.StreamAnalytics`) on
each frame, with :func:`pipeline.frames.analyse`, and the numbered outbox of every event it
sends on (:class:`pipeline.stages.publish_state.SentEvents`), so a restarted publish stage can
ask for the events its predecessor had not journaled (``resend``)."""

from __future__ import annotations

import logging
import time
from typing import Any

from models.results import FrameResult
from pipeline.analytics import StreamAnalytics
from pipeline.config import VigilConfig
from pipeline.frames import analyse, stream_end_events
from pipeline.graph.context import StageContext
from pipeline.graph.stage import Stage
from pipeline.protocol import Kind
from pipeline.stages.publish_state import SentEvents

log = logging.getLogger(__name__)


class AnalyticsStage(Stage):
    """Per-stream analytics on each frame; every event it sends on (its own and the sources')
    is numbered and kept for a while.

    ``resume`` is given to an analytics stage restarted by the supervisor: its first message
    tells the publish stage to end the tracks the dead process left open (``tracks_lost``).
    """

    def __init__(
        self,
        ctx: StageContext,
        analytics: StreamAnalytics,
        n_sources: int,
        resume: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(ctx)
        self.analytics = analytics
        self.eos_left = n_sources
        self.resume = resume
        self.sent = SentEvents(gen=(resume or {}).get("restart", 0))

    @classmethod
    def from_config(
        cls, ctx: StageContext, cfg: VigilConfig, n_sources: int, resume: dict | None = None
    ) -> AnalyticsStage:
        return cls(ctx, StreamAnalytics.from_config(cfg), n_sources, resume)

    def setup(self) -> None:
        ctx = self.ctx
        self.inp, self.out = ctx.pull(ctx.endpoints.analytics), ctx.push(ctx.endpoints.publish)
        if self.resume:
            ctx.send(self.out, {"kind": Kind.TRACKS_LOST, "restart": self.resume["restart"]})

    @property
    def finished(self) -> bool:
        return not self.eos_left

    def send_event(self, event: dict[str, Any], eid: list[int] | None = None) -> None:
        eid = eid or self.sent.number(event)
        self.ctx.send(self.out, {"kind": Kind.EVENT, "event": event, "eid": eid})

    def on_message(self, header: dict[str, Any], arrays: dict[str, Any]) -> None:
        kind = header["kind"]
        if kind == Kind.RESEND:  # from a restarted publish stage
            self._resend(header)
            return
        # A stream that goes offline or resets (resolution change, pts backwards) ends its
        # open tracks first, so subscribers never see a track that silently vanishes.
        if kind == Kind.EVENT and header["event"]["type"] == "stream.offline":
            for event in stream_end_events(self.analytics, header["event"]["stream"]):
                self.send_event(event)
        elif kind == Kind.RESET:
            for event in stream_end_events(self.analytics, header["stream_id"]):
                self.send_event(event)
        if kind == Kind.EVENT:
            self.send_event(header["event"])
            return
        if kind != Kind.FRAME:
            self.ctx.send(self.out, header)
            self.eos_left -= kind == Kind.EOS
            return
        result = FrameResult.from_wire(header["result"], arrays)
        self.ctx.maybe_fault(result.frame_idx)
        for event in analyse(self.analytics, result):
            self.send_event(event)
        result.stage_ts["analytics"] = time.time()
        header["result"], res_arrays = result.to_wire()
        self.ctx.send(self.out, header, res_arrays)

    def _resend(self, header: dict[str, Any]) -> None:
        sent, after = self.sent, header["after"]
        events, lost = sent.after(after)
        if lost:
            log.error(
                "%d events the dead publish stage had not journaled were no longer kept "
                "for a resend (the newest %d are); they are lost",
                lost,
                sent.capacity,
            )
        if after is not None and after[0] != sent.gen:
            log.warning("events of the analytics process before this one that the dead "
                        "publish stage had not journaled are lost with it")  # fmt: skip
        for eid, event in events:
            self.send_event(event, eid)
        reply = {"kind": Kind.RESEND_DONE, "count": len(events), "lost": lost}
        self.ctx.send(self.out, {**reply, "request": header.get("request")})
